"""The HTTP API on a real server (loopback), with a real HTTP client: facebank's
JSON API for every call, the CompreFace- and DeepStack-compatible routes as
their documentation describes them, bad input, API keys, and the same answers
as gRPC for the same photos."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from conftest import FACES, ServerProcess, free_port, single_person_photos
from facebank.client import Client
from facebank.transport import GrpcTransport

OBAMA, BIDEN = FACES / "obama" / "obama_01.jpg", FACES / "biden" / "biden_01.jpg"
GROUP = FACES / "groups" / "two_people.jpg"


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    port = free_port()
    server = ServerProcess(root / "data", args=("--http", f"127.0.0.1:{port}")).start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=120) as http:
        yield server, http
    server.stop()


def post(http, rpc: str, body: dict | None = None, **kw) -> httpx.Response:
    return http.post(f"/v1/{rpc}", json=body if body is not None else {}, **kw)


def test_the_json_api_answers_every_call_in_the_proto_json_mapping(http_server):
    _, http = http_server
    r = post(http, "Collections/CreateCollection", {"name": "http-a", "threshold": 0.45})
    assert r.status_code == 200 and r.json()["name"] == "http-a" and r.json()["threshold"] == pytest.approx(0.45)
    r = post(http, "Enrollment/Enroll", {"collection": "http-a", "identity_id": "obama", "images": [{"data": b64(OBAMA)}]})
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["id"] == "obama" and r.json()["images"][0]["already_enrolled"] is False
    with open(BIDEN, "rb") as f:  # the same call with the image as a multipart file
        r = http.post("/v1/Enrollment/Enroll", data={"request": json.dumps({"collection": "http-a", "identity_id": "biden"})},
                      files={"images": ("biden_01.jpg", f, "image/jpeg")})
    assert r.status_code == 200 and r.json()["images"][0]["face"]["source_ref"] == "biden_01.jpg"
    r = post(http, "Search/SearchByImage", {"collection": "http-a", "image": {"data": b64(FACES / "obama" / "obama_02.jpg")}})
    assert r.json()["faces"][0]["matches"][0]["identity_id"] == "obama"
    r = post(http, "Identities/ListIdentities", {"collection": "http-a"})
    assert [i["id"] for i in r.json()["identities"]] == ["biden", "obama"]
    lines = http.post("/v1/Clusters/Ingest", json=[{"item_id": "a", "collection": "http-a", "image": {"data": b64(GROUP)}}])
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    assert len(json.loads(lines.text.splitlines()[0])["faces"]) == 2
    progress = [json.loads(line) for line in http.post("/v1/Clusters/RunClustering", json={"collection": "http-a"}).text.splitlines()]
    assert progress[-1]["stage"] == "done"
    receipt = post(http, "Identities/Forget", {"collection": "http-a", "identity_id": "biden"}).json()
    assert receipt["verification"]["passed"] is True and receipt["signature"]
    assert post(http, "Admin/Stats").json()["collections"]


@pytest.mark.parametrize("call, body, kwargs, status, fragment", [
    ("Search/SearchByImage", {"image": {"data": base64.b64encode(b"not an image").decode()}}, {}, 400, "not an image"),
    ("Search/SearchByImage", {"image": {"data": "@@@not base64"}}, {}, 400, "not a valid"),
    ("Search/SearchByImage", {"nonsense_field": 1}, {}, 400, "nonsense_field"),
    ("Enrollment/Enroll", {"identity_id": "x"}, {}, 400, "no images"),
    ("Identities/GetIdentity", {"identity_id": "nobody"}, {}, 404, "does not exist"),
    ("Collections/DescribeCollection", {"name": "no-such"}, {}, 404, "does not exist"),
    ("Collections/CreateCollection", {"name": "default"}, {}, 409, "already exists"),
])
def test_bad_requests_get_a_clean_4xx_with_a_json_body(http_server, call, body, kwargs, status, fragment):
    _, http = http_server
    r = post(http, call, body, **kwargs)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"] and r.json()["error"]["code"]


def test_malformed_bodies_routes_and_sizes_are_refused(http_server):
    _, http = http_server
    r = http.post("/v1/Search/SearchByImage", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = http.post("/v1/Search/SearchByImage", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "Content-Type" in r.json()["error"]["message"]
    assert http.post("/v1/Search/NoSuchCall", json={}).status_code == 404
    assert http.get("/v1/Search/SearchByImage").status_code == 405
    big = http.post("/v1/Search/SearchByImage", content=b"{" + b" " * (65 * 2**20) + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 429 and "limit" in big.json()["error"]["message"]
    r = http.post("/api/v1/recognition/recognize", files={"file": ("x.jpg", b"\xff\xd8 no jpeg", "image/jpeg")})
    assert r.status_code == 400 and "image" in r.json()["message"]
    r = http.post("/api/v1/recognition/recognize", json={"file": "!!!"})
    assert r.status_code == 400 and "base64" in r.json()["message"]
    assert http.get("/health", headers={}).status_code == 404  # unknown route, JSON answer
    stats = post(http, "Admin/Stats").json()
    assert all(c["stats"]["faces"] == c["stats"]["indexed"] for c in stats["collections"])  # nothing half stored


def test_openapi_and_docs_are_served_without_a_cdn(http_server):
    _, http = http_server
    doc = http.get("/openapi.json").json()
    assert "/v1/Search/SearchByImage" in doc["paths"] and "/api/v1/recognition/recognize" in doc["paths"]
    assert "SearchByImageRequest" in doc["components"]["schemas"]
    page = http.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in page and "https://" not in page
    assert http.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_compreface_recognition_as_documented(http_server):
    _, http = http_server
    r = http.post("/api/v1/recognition/faces", params={"subject": "kit"},
                  files={"file": ("kit.jpg", (FACES / "kit_harington" / "kit_harington_01.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 200 and r.json()["subject"] == "kit" and r.json()["image_id"].isdigit()
    image_id = r.json()["image_id"]
    r = http.post("/api/v1/recognition/recognize", params={"prediction_count": 2, "face_plugins": "landmarks", "status": "true"},
                  files={"file": ("k.jpg", (FACES / "kit_harington" / "kit_harington_02.jpg").read_bytes(), "image/jpeg")})
    face = r.json()["result"][0]
    assert set(face["box"]) == {"probability", "x_max", "y_max", "x_min", "y_min"} and len(face["landmarks"]) == 5
    assert face["subjects"][0]["subject"] == "kit" and face["subjects"][0]["similarity"] > 0.4
    assert "plugins_versions" in r.json() and "execution_time" in face
    r = http.post("/api/v1/recognition/recognize", json={"file": b64(FACES / "kit_harington" / "kit_harington_03.jpg")})
    assert r.json()["result"][0]["subjects"][0]["subject"] == "kit"  # base64 JSON variant
    listed = http.get("/api/v1/recognition/faces", params={"page": 0, "size": 10}).json()
    assert {"image_id": image_id, "subject": "kit"} in listed["faces"] and listed["page_size"] == 10
    assert "kit" in http.get("/api/v1/recognition/subjects").json()["subjects"]
    verified = http.post(f"/api/v1/recognition/faces/{image_id}/verify",
                         files={"file": ("k.jpg", (FACES / "kit_harington" / "kit_harington_02.jpg").read_bytes(), "image/jpeg")}).json()
    assert verified["result"][0]["similarity"] > 0.4
    assert http.post("/api/v1/recognition/subjects", json={"subject": "empty-one"}).json() == {"subject": "empty-one"}
    renamed = http.put("/api/v1/recognition/subjects/kit", json={"subject": "kit2"})
    assert renamed.status_code == 400 and "permanent" in renamed.json()["message"]
    gone = http.delete("/api/v1/recognition/subjects/kit").json()
    assert gone["subject"] == "kit" and gone["facebank_receipt"]["forgotten"] is True
    r = http.post("/api/v1/recognition/recognize", files={"file": ("k.jpg", (FACES / "kit_harington" / "kit_harington_02.jpg").read_bytes())})
    assert all(s["subject"] != "kit" for s in r.json()["result"][0]["subjects"])


def test_compreface_detection_and_verification(http_server):
    _, http = http_server
    found = http.post("/api/v1/detection/detect", files={"file": ("g.jpg", GROUP.read_bytes(), "image/jpeg")}).json()["result"]
    assert len(found) == 2
    r = http.post("/api/v1/verification/verify", files={"source_image": ("b.jpg", BIDEN.read_bytes(), "image/jpeg"),
                                                        "target_image": ("g.jpg", GROUP.read_bytes(), "image/jpeg")}).json()["result"][0]
    assert len(r["face_matches"]) == 2 and max(m["similarity"] for m in r["face_matches"]) > 0.4
    none = http.post("/api/v1/detection/detect", files={"file": ("n.png", (FACES.parent / "tight_crops" / "labels.csv").read_bytes())})
    assert none.status_code == 400


def test_deepstack_face_api_as_documented(http_server):
    _, http = http_server
    r = http.post("/v1/vision/face/register", data={"userid": "rose"},
                  files=[("image1", ("r1.jpg", (FACES / "rose_leslie" / "rose_leslie_01.jpg").read_bytes(), "image/jpeg")),
                         ("image2", ("r2.jpg", (FACES / "rose_leslie" / "rose_leslie_02.jpg").read_bytes(), "image/jpeg"))])
    assert r.json()["success"] is True and r.json()["message"] == "face added"
    r = http.post("/v1/vision/face/recognize", files={"image": ("g.jpg", (FACES / "groups" / "kit_with_rose.jpg").read_bytes(), "image/jpeg")})
    predictions = r.json()["predictions"]
    assert r.json()["success"] and {p["userid"] for p in predictions} >= {"rose", "unknown"}
    assert all({"confidence", "x_min", "y_min", "x_max", "y_max"} <= set(p) for p in predictions)
    strict = http.post("/v1/vision/face/recognize", data={"min_confidence": "0.99"},
                       files={"image": ("g.jpg", (FACES / "groups" / "kit_with_rose.jpg").read_bytes(), "image/jpeg")}).json()
    assert {p["userid"] for p in strict["predictions"]} == {"unknown"}
    assert "rose" in http.post("/v1/vision/face/list", data={}).json()["faces"]
    faces = http.post("/v1/vision/face", files={"image": ("g.jpg", GROUP.read_bytes(), "image/jpeg")}).json()["predictions"]
    assert len(faces) == 2
    bad = http.post("/v1/vision/face/register", data={"userid": "x"})
    assert bad.status_code == 400 and bad.json()["success"] is False and bad.json()["error"]
    assert http.post("/v1/vision/face/delete", data={"userid": "rose"}).json()["success"] is True
    assert "rose" not in http.post("/v1/vision/face/list", data={}).json()["faces"]


def test_same_photo_same_answer_over_http_and_grpc(http_server):
    server, http = http_server
    fb = Client(GrpcTransport(server.address))
    try:
        fb.create_collection("parity")
        for who, photos in sorted(single_person_photos().items())[:5]:
            fb.enroll(who, [photos[0].path], collection="parity")
        probe = FACES / "groups" / "obama_and_biden.jpg"
        grpc_answer = fb.search(probe, collection="parity", top_k=3)
        http_answer = post(http, "Search/SearchByImage", {"collection": "parity", "image": {"data": b64(probe)}, "options": {"top_k": 3}}).json()
        assert [[(m.identity_id, round(m.score, 4)) for m in f.matches] for f in grpc_answer.faces] == \
               [[(m["identity_id"], round(m["score"], 4)) for m in f["matches"]] for f in http_answer["faces"]]
    finally:
        fb.close()


def test_api_keys_and_roles_over_http(tmp_path):
    data = tmp_path / "data"
    from conftest import run_cli

    admin = run_cli("keys", "create", "--data", str(data), "--role", "admin").stdout.strip()
    search = run_cli("keys", "create", "--data", str(data), "--role", "search").stdout.strip()
    staff = run_cli("keys", "create", "--data", str(data), "--role", "enroll", "--collection", "staff").stdout.strip()
    port = free_port()
    server = ServerProcess(data, args=("--http", f"127.0.0.1:{port}")).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            assert post(http, "Admin/Stats").status_code == 401
            assert post(http, "Admin/Stats", headers={"authorization": "Bearer fbk_nope_nope"}).status_code == 401
            assert post(http, "Admin/Stats", headers={"authorization": f"Bearer {search}"}).status_code == 200
            enroll = {"identity_id": "o", "images": [{"data": b64(OBAMA)}]}
            assert post(http, "Enrollment/Enroll", enroll, headers={"x-api-key": search}).status_code == 403
            assert post(http, "Collections/CreateCollection", {"name": "staff"}, headers={"x-api-key": admin}).status_code == 200
            r = http.post("/api/v1/recognition/faces", params={"subject": "s"}, headers={"x-api-key": staff},
                          files={"file": ("o.jpg", OBAMA.read_bytes(), "image/jpeg")})
            assert r.status_code == 200  # the key's one collection
            listed = post(http, "Identities/ListIdentities", {"collection": "staff"}, headers={"x-api-key": admin}).json()
            assert [i["id"] for i in listed["identities"]] == ["s"]
            assert http.post("/v1/vision/face/list", data={"api_key": staff}).json()["faces"] == ["s"]
            assert http.post("/v1/vision/face/list", data={"api_key": "fbk_bad_key"}).status_code == 401
    finally:
        server.stop()


def test_the_readme_curl_examples_work_as_written(tmp_path):
    """Every curl line of the README's HTTP section, run against a server (its port swapped in)."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## HTTP\n"): readme.index("\n## ", readme.index("## HTTP\n") + 1)]
    lines = [line for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert len(lines) == 6
    port = free_port()
    server = ServerProcess(tmp_path / "data", args=("--http", f"127.0.0.1:{port}")).start()
    try:
        for line in lines:
            result = subprocess.run(["bash", "-c", line.replace("localhost:8000", f"127.0.0.1:{port}")], cwd=root, capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            answer = json.loads(result.stdout)
            assert "error" not in answer and answer.get("success", True) is True, (line, answer)
    finally:
        server.stop()


def test_http_connections_send_answers_without_waiting_for_delayed_acks(tmp_path):
    """An answer is written in two parts (head, body); on a keep-alive connection without
    TCP_NODELAY the body waited for the client's delayed ACK: 40 ms on every call."""
    import socket

    from conftest import make_config
    from facebank.server.app import bind_http

    listener = bind_http(make_config(tmp_path / "data", http="127.0.0.1:0"))
    try:
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        assert listener.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on connections of such a listener
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        accepted.close()
        client.close()
    finally:
        listener.close()
