"""The edges a new user and an attacker find: limits stated in bytes and
enforced, metadata bounded per identity, every face of a crowded photo, scoped
keys on their own collection, NFC ids, page tokens, a busy port, faces below
the quality gate, tight crops, which face verify compared, and readable SDK results."""

from __future__ import annotations

import csv
import io
import json
import socket
import unicodedata

import grpc
import pytest
from PIL import Image

from conftest import FACES, ServerProcess, make_config, run_cli, single_person_photos
from facebank.client import Client
from facebank.errors import InvalidArgument, PermissionDenied
from facebank.server.app import start
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport
from facebank.v1 import facebank_pb2 as pb
from facebank.v1 import facebank_pb2_grpc as stubs

OBAMA = FACES / "obama" / "obama_01.jpg"
TIGHT = FACES.parent / "tight_crops"   # 150x150 crops where the face fills the frame (ID-photo style)


@pytest.fixture
def grpc_client(tmp_path, embedder):
    running = start(make_config(tmp_path / "data"), engine=Engine(make_config(tmp_path / "data"), embedder=embedder))
    fb = Client(GrpcTransport(f"127.0.0.1:{running.port}"))
    yield fb, running
    fb.close()
    running.stop(grace=1)


def code_of(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def test_long_values_within_the_stated_byte_limits_are_stored(grpc_client):
    fb, running = grpc_client
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    enroll, identities = stubs.EnrollmentStub(channel), stubs.IdentitiesStub(channel)
    long_value = "v" * 1024
    emoji_id = "\U0001F600" * 64   # 256 bytes of UTF-8: the limit
    image = pb.Image(data=OBAMA.read_bytes())
    enroll.Enroll(pb.EnrollRequest(identity_id=emoji_id, images=[image], metadata={"k" * 128: long_value}))
    got = identities.UpdateIdentity(pb.UpdateIdentityRequest(identity_id=emoji_id, set_metadata={"note": "n" * 1024}))
    assert got.metadata["note"] == "n" * 1024
    hits = fb.search(FACES / "obama" / "obama_02.jpg", filter={"k" * 128: long_value}).faces[0].matches
    assert hits and hits[0].identity_id == emoji_id
    bulk = list(enroll.BulkEnroll(iter([pb.BulkEnrollItem(item_id="x", identity_id="bulk-" + "é" * 100, metadata={"m": "x" * 1024},
                                                          image=pb.Image(data=(FACES / "biden" / "biden_01.jpg").read_bytes()))])))
    assert bulk[0].HasField("enrolled"), bulk[0].failure.message


@pytest.mark.parametrize("request_, field", [
    (pb.EnrollRequest(identity_id="\U0001F600" * 127), "identity_id"),
    (pb.EnrollRequest(identity_id="a", metadata={"k": "v" * 1025}), "metadata"),
    (pb.EnrollRequest(identity_id="a", metadata={"k" * 129: "v"}), "metadata key"),
    (pb.EnrollRequest(identity_id="a", display_name="\u00e9" * 300), "display_name"),
])
def test_values_over_the_limits_are_refused_naming_field_and_limit(grpc_client, request_, field):
    fb, running = grpc_client
    request_.images.add(data=OBAMA.read_bytes())
    code, message = code_of(lambda: stubs.EnrollmentStub(grpc.insecure_channel(f"127.0.0.1:{running.port}")).Enroll(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, message)
    assert field in message and "bytes" in message


def test_metadata_of_one_identity_stays_bounded(grpc_client):
    fb, _ = grpc_client
    fb.enroll("p", [OBAMA])
    refused = None
    for call in range(150):
        try:
            fb.update_identity("p", set_metadata={f"k{call}-{i}": "v" * 100 for i in range(8)})
        except InvalidArgument as err:
            refused = err
            break
    assert refused is not None and "at most 64" in refused.message
    assert len(fb.get_identity("p").metadata) <= 64


def crowd(n_faces: int) -> bytes:
    """A photo of n_faces faces: the test faces, shrunk, on a grey board."""
    faces = [Image.open(p).convert("RGB").resize((64, 64)) for p in sorted(TIGHT.glob("*.jpg"))]
    cols = 20
    board = Image.new("RGB", (cols * 100, -(-n_faces // cols) * 100), (127, 127, 127))
    for i in range(n_faces):
        board.paste(faces[i % len(faces)], ((i % cols) * 100 + 18, (i // cols) * 100 + 18))
    out = io.BytesIO()
    board.save(out, format="JPEG", quality=92)
    return out.getvalue()


def test_every_face_of_a_crowded_photo_is_stored(grpc_client, embedder):
    fb, _ = grpc_client
    photo = crowd(200)
    from facebank.embedder import decode_image

    expected = len(embedder.analyze([decode_image(photo)])[0])
    assert expected > 150  # the detector finds them all
    result = list(fb.ingest([pb.IngestItem(item_id="crowd", image=pb.Image(data=photo))]))[0]
    assert not result.HasField("failure") and len(result.faces) == expected
    assert len(fb.search(photo, accept_low_quality=True, top_k=1).faces) == expected


def test_a_scoped_key_manages_its_own_collection(tmp_path, embedder):
    data = tmp_path / "data"
    engine = Engine(make_config(data), embedder=embedder)
    from facebank.server.auth import ApiKeys

    _, secret = ApiKeys(engine.store).create("ops", "admin", ["staff"])
    running = start(make_config(data), engine=engine)
    try:
        fb = Client(GrpcTransport(f"127.0.0.1:{running.port}", api_key=secret))
        fb.create_collection("staff")
        assert fb.describe_collection("staff").name == "staff"
        assert fb.update_collection("staff", threshold=0.5).threshold == pytest.approx(0.5)
        with pytest.raises(PermissionDenied):
            fb.describe_collection("default")
        fb.drop_collection("staff")
        fb.close()
    finally:
        running.stop(grace=1)


def test_ids_are_one_whatever_their_unicode_form_and_bad_page_tokens_are_refused(grpc_client):
    fb, running = grpc_client
    nfc, nfd = unicodedata.normalize("NFC", "Zoë Renée"), unicodedata.normalize("NFD", "Zoë Renée")
    assert nfc != nfd
    fb.enroll(nfc, [OBAMA])
    fb.enroll(nfd, [FACES / "obama" / "obama_02.jpg"])
    assert fb.get_identity(nfd).face_count == 2 and [i.id for i in fb.list_identities()] == [nfc]
    identities = stubs.IdentitiesStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    for token in ("QUJD", "not base64!", "ZmJwMTo="):
        code, message = code_of(lambda: identities.ListIdentities(pb.ListIdentitiesRequest(page_token=token)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in message


def test_serve_on_a_busy_port_says_so_in_one_line_and_creates_nothing(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        result = run_cli("serve", "--data", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}", check=False)
    finally:
        busy.close()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use or the address is not this machine's; nothing was changed"]
    assert not (tmp_path / "data").exists()


def tiny_face() -> bytes:
    """A photo whose only face is too small to pass the quality gate."""
    board = Image.new("RGB", (640, 480), (127, 127, 127))
    board.paste(Image.open(TIGHT / "obama_01.jpg").convert("RGB").resize((22, 22)), (300, 200))
    out = io.BytesIO()
    board.save(out, format="PNG")
    return out.getvalue()


def test_faces_below_the_quality_gate_are_left_out_and_said(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        server.cli("enroll", str(OBAMA), "--identity", "obama")
        photo = tmp_path / "tiny.png"
        photo.write_bytes(tiny_face())
        default = server.cli("search", str(photo)).stdout
        assert "no face passed the quality check" in default and "failed the quality check" in default
        assert "--accept-low-quality" in default
        shown = server.cli("search", str(photo), "--accept-low-quality").stdout
        assert "face 1 at" in shown and "[low quality: " in shown
        as_json = json.loads(server.cli("search", str(photo), "--json").stdout)
        assert as_json["faces"] == [] and as_json["faces_below_quality"] == 1
    finally:
        server.stop()


def test_tightly_cropped_faces_are_found_and_identified(grpc_client):
    fb, _ = grpc_client
    with open(TIGHT / "labels.csv") as f:
        crops = list(csv.DictReader(f))
    for identity in sorted({c["identity"] for c in crops}):
        fb.enroll(identity, [single_person_photos()[identity][0].path])
    for crop in crops:
        result = fb.search(FACES.parent / crop["path"])
        assert len(result.faces) == 1, crop["path"]
        box = result.faces[0].face.box
        assert -30 < box.x0 < box.x1 < 180 and -30 < box.y0 < box.y1 < 180  # in the crop's own pixels
        assert result.faces[0].matches[0].identity_id == crop["identity"], crop["path"]


def test_verify_says_which_face_it_compared_and_takes_another(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        group = FACES / "groups" / "two_people.jpg"
        out = server.cli("verify", str(group), str(FACES / "biden" / "biden_01.jpg")).stdout
        assert "2 faces; compared face 1 at" in out
        scores = [json.loads(server.cli("verify", str(group), str(FACES / "biden" / "biden_01.jpg"), "--face", str(n), "--json").stdout)
                  for n in (1, 2)]
        assert scores[0]["image"]["face_used"] == 1 and scores[1]["image"]["face_used"] == 2
        assert {s["match"] for s in scores} == {True, False}  # biden is one of the two
        bad = server.cli("verify", str(group), str(OBAMA), "--face", "3", check=False)
        assert bad.returncode == 1 and "has 2 face(s)" in bad.stderr
    finally:
        server.stop()


def test_folder_enrollment_names_every_skipped_file(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        root = tmp_path / "people"
        deep = "a-rather-long-folder-name-that-goes-past-eighty-columns-for-sure"
        (root / "obama" / deep).mkdir(parents=True)
        (root / "obama" / deep / "obama_01.jpg").write_bytes(OBAMA.read_bytes())
        (root / "loose.jpg").write_bytes(OBAMA.read_bytes())
        (root / "obama" / "notes.txt").write_text("not a photo")
        (root / "obama" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        result = server.cli("enroll", str(root))
        skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
        assert any(line.startswith("skipped loose.jpg: not in an identity folder") for line in skipped)
        assert any(line.startswith("skipped obama/notes.txt: not an image") for line in skipped)
        assert any(line.startswith("skipped obama/broken.jpg: ") for line in skipped)
        assert "enrolled 1," in result.stdout and "(4 files)" in result.stdout
        bad = server.cli("enroll", str(OBAMA), str(root / "obama" / "broken.jpg"), "--identity", "x", check=False)
        assert bad.returncode == 1 and "broken.jpg" in bad.stderr and "image 1:" not in bad.stderr
    finally:
        server.stop()


def test_low_quality_hint_names_the_cli_flag(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        photo = tmp_path / "tiny.png"
        photo.write_bytes(tiny_face())
        result = server.cli("enroll", str(photo), "--identity", "x", check=False)
        assert result.returncode == 1 and "--accept-low-quality" in result.stderr
    finally:
        server.stop()


def test_sdk_results_print_readably(grpc_client):
    fb, _ = grpc_client
    fb.enroll("obama", [OBAMA])
    result = fb.search(FACES / "obama" / "obama_02.jpg")
    assert str(result.faces[0].face.box).startswith("Box(") and "x0:" not in repr(result.faces[0].face.box)
    assert repr(result.faces[0].matches[0]).startswith("Match('obama', score=0.")
    assert repr(result).startswith("SearchByImageResponse(threshold=0.40, faces=[FaceSearchResult(Box(")


def test_each_request_is_logged_in_one_line_without_ids(tmp_path):
    server = ServerProcess(tmp_path / "data", args=("--log-format", "json")).start()
    try:
        server.cli("enroll", str(OBAMA), "--identity", "secret-person-id", "--name", "Secret Name")
        server.cli("search", str(FACES / "obama" / "obama_02.jpg"))
        server.cli("forget", "nobody-here", check=False)
    finally:
        server.stop()
    log = server.log.read_text()
    requests = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"facebank.requests"' in line]
    seen = {(r["method"], r["collection"], r["status"]) for r in requests}
    assert ("Enrollment/Enroll", "default", "OK") in seen and ("Search/SearchByImage", "default", "OK") in seen
    assert ("Identities/Forget", "default", "NOT_FOUND") in seen
    assert all(isinstance(r["ms"], float) for r in requests)
    assert "secret-person-id" not in log and "Secret Name" not in log


def test_contact_sheet_crops_stay_inside_the_photo_and_captions_differ():
    from facebank.contact_sheet import crop_window, short_names

    assert crop_window((200, 100), [150, 10, 210, 70]) == (110, 0, 200, 90)   # moved inside, not padded
    assert crop_window((60, 60), [0, 0, 80, 80]) == (0, 0, 60, 60)           # shrunk to the photo
    names = short_names(["2019/holiday/IMG_0001.jpg", "2020/holiday/IMG_0001.jpg", "2020/holiday/IMG_0002.jpg"])
    assert names == {"2019/holiday/IMG_0001.jpg": "2019/holiday/IMG_0001.jpg", "2020/holiday/IMG_0001.jpg": "2020/holiday/IMG_0001.jpg",
                     "2020/holiday/IMG_0002.jpg": "IMG_0002.jpg"}
    assert len(set(names.values())) == 3


def test_open_local_beside_a_running_server_is_one_line_in_the_cli(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        result = run_cli("keys", "list", "--data", str(tmp_path / "data"), check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().startswith("error: another facebank process is using")
    finally:
        server.stop()
