"""The `facebank` command in its documented forms, against `facebank serve`
running as its own process."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from conftest import FACES, ServerProcess, run_cli, single_person_photos


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    server = ServerProcess(root / "data").start()
    yield server, root
    assert server.stop() == 0  # SIGTERM: graceful exit


@pytest.fixture(scope="module")
def gallery(served):
    """The first photo of each identity, one folder per identity, enrolled once."""
    server, root = served
    folder = root / "gallery"
    for identity, shots in single_person_photos().items():
        (folder / identity).mkdir(parents=True)
        shutil.copy(shots[0].path, folder / identity)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken").mkdir()
    (folder / "broken" / "x.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    first = server.cli("enroll", str(folder))
    return folder, first


def test_enroll_folder_reports_progress_and_summary(gallery):
    _, first = gallery
    assert "enrolled 10, already enrolled 0" in first.stdout
    assert "UNDECODABLE_IMAGE 1" in first.stdout
    assert "skipped" in first.stderr and "broken/x.jpg" in first.stderr


def test_enroll_folder_again_resumes_without_redoing(served, gallery):
    server, _ = served
    folder, _ = gallery
    again = server.cli("enroll", str(folder), "--json")
    summary = json.loads(again.stdout)
    assert summary["stored"] == 0 and summary["already"] == 10 and summary["rejected"] == {"UNDECODABLE_IMAGE": 1, "NOT_AN_IMAGE": 1}


def test_search_json_shape(served, gallery):
    server, _ = served
    out = json.loads(server.cli("search", str(FACES / "groups" / "obama_and_biden.jpg"), "--json").stdout)
    assert set(out) == {"faces", "threshold", "faces_below_quality"} and out["faces_below_quality"] == 0
    assert len(out["faces"]) == 3
    for face in out["faces"]:
        assert len(face["box"]) == 4 and set(face["quality"]) >= {"passed", "reasons", "face_size", "sharpness", "yaw"}
        scores = [m["score"] for m in face["matches"]]
        assert scores == sorted(scores, reverse=True)
    named = sorted(f["matches"][0]["identity"] for f in out["faces"] if f["matches"])
    assert named == ["biden", "obama"]


def test_every_held_back_photo_is_identified_by_the_cli(served, gallery):
    server, _ = served
    for identity, shots in single_person_photos().items():
        for shot in shots[1:]:
            out = json.loads(server.cli("search", str(shot.path), "--json").stdout)
            assert out["faces"][0]["matches"][0]["identity"] == identity, shot.path


def test_verify_identities_stats(served, gallery):
    server, _ = served
    obama = single_person_photos()["obama"]
    same = json.loads(server.cli("verify", str(obama[0].path), str(obama[1].path), "--json").stdout)
    assert same["match"] and same["score"] > 0.5
    ids = json.loads(server.cli("identities", "--json").stdout)["identities"]
    assert {i["id"] for i in ids} == set(single_person_photos())
    stats = json.loads(server.cli("stats", "--json").stdout)
    default = next(c for c in stats["collections"] if c["name"] == "default")
    assert default["identities"] == 10 and default["faces"] == 10 and default["indexed"] == 10


def test_forget_from_the_cli(served, gallery):
    server, _ = served
    receipt = json.loads(server.cli("forget", "shea_whigham", "--json").stdout)
    assert receipt["verification"]["passed"] and receipt["removed"]["faces"] == 1
    assert "shea_whigham" not in server.cli("identities").stdout
    again = server.cli("forget", "shea_whigham", check=False)
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "Traceback" not in again.stderr
    receipts = server.cli("receipts")
    assert "chain: intact" in receipts.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("search", "{missing}"), "does not exist"),
        (("search", "{notes}"), "not an image"),
        (("enroll", "{photo}"), "give one folder"),
        (("enroll", "{photo}", "--identity", ""), "identity_id is empty"),
        (("search", "{photo}", "--collection", "nope"), "does not exist"),
        (("search", "{photo}", "--top-k", "1000"), "top_k"),
        (("verify", "{photo}"), "IMAGE_B or --identity"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(served, gallery, args, fragment):
    server, root = served
    folder, _ = gallery
    subst = {"missing": str(root / "missing.jpg"), "notes": str(folder / "notes.txt"), "photo": str(single_person_photos()["obama"][1].path)}
    result = server.cli(*(a.format(**subst) for a in args), check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and fragment in result.stderr, result.stderr


def test_unreachable_server_is_a_clear_error(tmp_path):
    from conftest import free_port

    result = run_cli("stats", server=f"127.0.0.1:{free_port()}", check=False)
    assert result.returncode == 1 and "cannot reach a facebank server" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_public_address_without_keys(tmp_path):
    result = run_cli("serve", "--data", str(tmp_path / "d"), "--listen", "0.0.0.0:0", check=False)
    assert result.returncode == 1
    assert "without API keys" in result.stderr and "facebank keys create" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_lets_the_server_exit_cleanly(tmp_path):
    server = ServerProcess(tmp_path / "d").start()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    server.log_file.close()
