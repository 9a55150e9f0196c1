"""Face crops: each stored face keeps the aligned face its embedding came from,
sealed under its subject's data key, shredded with it, and readable only by
the enroll role and up."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import FACES, make_config, single_person_photos
from facebank.client import Client
from facebank.errors import FailedPrecondition, NotFound, PermissionDenied
from facebank.index import identities
from facebank.server.app import start
from facebank.server.auth import ApiKeys
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport, LocalTransport
from facebank.v1 import facebank_pb2 as pb

PEOPLE = single_person_photos()
GROUP = FACES / "groups" / "two_people.jpg"


@pytest.fixture
def local(tmp_path, embedder):
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    fb = Client(LocalTransport(engine))
    yield fb, engine, tmp_path / "data"
    fb.close()


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def _data_files(root) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def _sealed_crop_rows(engine: Engine, face_ids) -> list[bytes]:
    with engine.store.read() as t:
        return [t.get_crop(fid)[2] for fid in face_ids]


def test_the_crop_is_the_aligned_face_its_embedding_was_computed_from(local, embedder):
    fb, engine, _ = local
    face = fb.enroll("obama", [PEOPLE["obama"][0].path]).images[0].face
    crop = fb.face_crop(face.face_id)
    assert crop.media_type == "image/jpeg" and crop.face.identity_id == "obama" and crop.face.face_id == face.face_id
    pixels = _pixels(crop.image)
    assert pixels.shape == (embedder.spec.crop_size, embedder.spec.crop_size, 3)
    _, stored = identities.face_vector(engine.store, "default", face.face_id)
    again = embedder.embed_crops(pixels[None])[0]
    assert float(again @ stored) > 0.99  # re-embedding the kept crop gives the stored template back
    other = embedder.embed_crops(np.ascontiguousarray(pixels[:, ::-1])[None])[0]
    assert float(other @ stored) < float(again @ stored)  # and the comparison can tell crops apart


def test_a_crop_is_never_stored_in_clear(local):
    fb, engine, data = local
    face = fb.enroll("biden", [PEOPLE["biden"][0].path]).images[0].face
    jpeg = fb.face_crop(face.face_id).image
    engine.maintenance.clean_now()
    files = _data_files(data)
    for needle in (jpeg, jpeg[200:264], jpeg[-64:]):
        assert not any(needle in blob for blob in files)
    sealed = _sealed_crop_rows(engine, [face.face_id])[0]
    assert any(sealed[40:104] in blob for blob in files)  # the scan can find the sealed row


def test_forget_shreds_the_crops_and_compaction_leaves_no_byte_of_them(local):
    fb, engine, data = local
    fb.enroll("rose_leslie", [s.path for s in PEOPLE["rose_leslie"][:2]])
    kit = fb.enroll("kit_harington", [PEOPLE["kit_harington"][0].path]).images[0].face
    rose_faces = [f.face_id for f in fb.get_identity("rose_leslie").faces]
    assert len(rose_faces) == 2
    sealed = _sealed_crop_rows(engine, rose_faces)
    receipt = fb.forget("rose_leslie")
    assert receipt.removed["crops"] == 2
    for fid in rose_faces:
        with pytest.raises(NotFound):
            fb.face_crop(fid)
    fb.compact()
    files = _data_files(data)
    for blob in sealed:
        assert not any(blob[40:104] in f for f in files)
    assert fb.face_crop(kit.face_id).image  # the other person's crop is untouched


def test_a_collection_without_crops_keeps_templates_only(local):
    fb, engine, _ = local
    coll = fb.create_collection("templates", keep_crops=False)
    assert not coll.keep_crops and fb.describe_collection("default").keep_crops
    face = fb.enroll("obama", [PEOPLE["obama"][0].path], collection="templates").images[0].face
    with pytest.raises(FailedPrecondition, match="keep_crops off") as err:
        fb.face_crop(face.face_id, collection="templates")
    assert err.value.reason == "NO_CROP"
    with engine.store.read() as t:
        assert t.count("crops") == 0
    assert fb.get_identity("obama", collection="templates", with_crops=True).faces[0].crop == b""


def test_listings_carry_crops_on_request_and_a_face_of_another_collection_is_not_found(local):
    fb, _, _ = local
    fb.create_collection("other")
    fb.enroll("obama", [s.path for s in PEOPLE["obama"][:2]])
    fb.enroll("biden", [PEOPLE["biden"][0].path], collection="other")
    plain = fb.get_identity("obama")
    assert all(f.crop == b"" for f in plain.faces)  # not unless asked: listings stay small
    shown = fb.get_identity("obama", with_crops=True)
    assert len(shown.faces) == 2 and all(_pixels(f.crop).shape[2] == 3 for f in shown.faces)
    listed = list(fb.list_identities(with_crops=True))
    assert [len(f.crop) > 0 for i in listed for f in i.faces] == [True, True]
    with pytest.raises(NotFound):
        fb.face_crop(shown.faces[0].face_id, collection="other")


def test_crops_follow_faces_through_clustering_naming_and_forget(local):
    fb, engine, _ = local
    fb.create_collection("photos")
    items = [pb.IngestItem(item_id=str(i), collection="photos", image=pb.Image(data=s.path.read_bytes(), source_ref=s.path.name))
             for i, s in enumerate(PEOPLE["obama"][:3] + PEOPLE["biden"][:2])]
    faces = [f for r in fb.ingest(items) for f in r.faces]
    assert all(fb.face_crop(f.face_id, collection="photos").image for f in faces)  # each under its own key while unassigned
    list(fb.cluster(collection="photos"))
    listing = fb.list_clusters(collection="photos", include_faces=True, with_crops=True)
    assert all(f.crop for c in listing.clusters for f in c.faces)
    obama_face = next(f.face_id for f in faces if f.source_ref.startswith("obama"))
    cluster = next(c for c in listing.clusters if obama_face in [f.face_id for f in c.faces])
    before = fb.face_crop(obama_face, collection="photos").image
    fb.name_cluster(cluster.cluster_id, "obama", collection="photos")
    assert fb.face_crop(obama_face, collection="photos").image == before  # re-sealed for its new owner, same crop
    with engine.store.read() as t:
        row_owner, _, _ = t.get_crop(obama_face)
        assert row_owner == t.get_identity(t.get_collection("photos").id, "obama").iid
    fb.forget("obama", collection="photos")
    with pytest.raises(NotFound):
        fb.face_crop(obama_face, collection="photos")


def test_crops_need_the_enroll_role_over_grpc_and_http(tmp_path, embedder):
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    keys = ApiKeys(engine.store)
    secrets = {role: keys.create(role, role, [])[1] for role in ("enroll", "search")}
    running = start(make_config(tmp_path / "data", http="127.0.0.1:0"), engine=engine)
    try:
        enroller = Client(GrpcTransport(f"127.0.0.1:{running.port}", api_key=secrets["enroll"]))
        searcher = Client(GrpcTransport(f"127.0.0.1:{running.port}", api_key=secrets["search"]))
        face = enroller.enroll("obama", [PEOPLE["obama"][0].path]).images[0].face
        assert enroller.face_crop(face.face_id).image
        with pytest.raises(PermissionDenied):
            searcher.face_crop(face.face_id)
        with pytest.raises(PermissionDenied):
            searcher.get_identity("obama", with_crops=True)
        assert searcher.get_identity("obama").faces[0].face_id == face.face_id  # without crops, search may read
        url = f"http://{running.http.address}/v1/collections/default/faces/{face.face_id}/crop.jpg"
        ok = httpx.get(url, headers={"authorization": f"Bearer {secrets['enroll']}"})
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg" and _pixels(ok.content).ndim == 3
        assert httpx.get(url, headers={"authorization": f"Bearer {secrets['search']}"}).status_code == 403
        compreface = httpx.get(f"http://{running.http.address}/api/v1/recognition/faces/{face.face_id}/img", headers={"x-api-key": secrets["enroll"]})
        assert compreface.status_code == 200 and compreface.content == ok.content  # CompreFace's example image route
        missing = httpx.get(url.replace(f"/{face.face_id}/", "/999999/"), headers={"authorization": f"Bearer {secrets['enroll']}"})
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]
        enroller.close()
        searcher.close()
    finally:
        running.stop(grace=2)
