"""Damaged data is detected and named, never served as someone else: bits
flipped inside catalog records, a bad sealed embedding among many, a
truncated catalog file. Each test damages the files of a stopped server, as a
disk or a bad copy would, and starts it again."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import lmdb
import pytest

from conftest import FACES, ServerProcess, free_port
from test_key_binding import assert_one_line_refusal


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def flip_all(path, needle: bytes, offset: int, mask: int = 0x01) -> int:
    """Flip bits at `offset` inside every occurrence of `needle` in the file; returns how many."""
    data = bytearray(path.read_bytes())
    count, start = 0, 0
    while (at := data.find(needle, start)) >= 0:
        data[at + offset] ^= mask
        count += 1
        start = at + 1
    path.write_bytes(bytes(data))
    return count


def raw_row(data_dir, table: str, key: bytes) -> bytes:
    env = lmdb.open(str(data_dir / "catalog"), max_dbs=32, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return txn.get(key, db=env.open_db(table.encode(), txn=txn))
    finally:
        env.close()


@pytest.fixture
def gallery(tmp_path):
    """Three people enrolled, obama with two photos (so face ids and iids differ)."""
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    server.cli("enroll", str(FACES / "obama" / "obama_01.jpg"), str(FACES / "obama" / "obama_02.jpg"), "--identity", "obama",
               "--name", "Barack Obama")
    server.cli("enroll", str(FACES / "biden" / "biden_01.jpg"), "--identity", "biden", "--name", "Joe Biden")
    server.cli("enroll", str(FACES / "kit_harington" / "kit_harington_01.jpg"), "--identity", "kit", "--name", "Kit Harington")
    server.stop()
    return data


def search_json(server: ServerProcess, photo) -> list[dict]:
    out = json.loads(server.cli("search", str(photo), "--json").stdout)
    return [m for f in out["faces"] for m in f["matches"]]


@pytest.mark.parametrize("owner_map", ["loaded", "loading"])
def test_a_flipped_owner_record_never_serves_another_person(gallery, owner_map):
    # biden: face 3, identity 2. One bit turns its owner into identity 3 (kit).
    owner = raw_row(gallery, "face_owner", u64(3))
    assert owner[:8] == u64(2)
    assert flip_all(gallery / "catalog" / "data.mdb", u64(3) + owner, 15) >= 1   # this row (and its stale copies): its tag is unique
    # "loading": the search comes while the owner map is still held at its first batch, so the
    # face's owner is read from the catalog on demand (face_owners.py)
    env = {"FACEBANK_DELAY_AT": "owners:batch-read=600"} if owner_map == "loading" else {}
    server = ServerProcess(gallery, env=env).start()
    try:
        matches = search_json(server, FACES / "biden" / "biden_02.jpg")
        assert all(m["identity"] != "kit" for m in matches), matches  # never someone else
        report = server.cli("check", "--json", check=False)
        assert report.returncode == 1
        assert {"table": "face_owner", "key": "3", "problem": "failed its integrity tag"} in json.loads(report.stdout)["damaged"]
    finally:
        server.stop()


def test_a_flipped_name_byte_is_not_served(gallery):
    assert flip_all(gallery / "catalog" / "data.mdb", b'"display_name":"Joe Biden"', len('"display_name":"Joe B'), 0x20) >= 1
    server = ServerProcess(gallery).start()
    try:
        matches = search_json(server, FACES / "biden" / "biden_02.jpg")
        assert not any(m["identity"] == "biden" or "Joe b" in m["display_name"] for m in matches), matches
        shown = server.cli("identities", "--json").stdout
        assert "Joe b" not in shown and "obama" in shown  # the rest is served as before
        report = json.loads(server.cli("check", "--json", check=False).stdout)
        assert any(d["table"] == "identities" for d in report["damaged"])
        fixed = json.loads(server.cli("check", "--quarantine", "--json").stdout)
        assert fixed["quarantined"] >= 1 and any(d["table"] == "identities" for d in fixed["in_quarantine"])
        assert json.loads(server.cli("check", "--json").stdout)["damaged"] == []
    finally:
        server.stop()


def test_one_bad_sealed_embedding_is_named_and_the_rest_served(gallery):
    sealed = raw_row(gallery, "embeddings", u64(4))  # kit's face
    assert flip_all(gallery / "catalog" / "data.mdb", sealed[40:72], 8) == 1
    for snap in (gallery / "indexes").glob("*.snap"):
        snap.unlink()  # the start rebuilds every index from the sealed embeddings
    server = ServerProcess(gallery).start()
    try:
        assert any(m["identity"] == "obama" for m in search_json(server, FACES / "obama" / "obama_03.jpg"))
        assert not search_json(server, FACES / "kit_harington" / "kit_harington_02.jpg")
        damaged = json.loads(server.cli("check", "--json", check=False).stdout)["damaged"]
        assert [(d["table"], d["key"]) for d in damaged] == [("embeddings", "4")]
        assert "1 damaged catalog record" in server.cli("stats").stderr
    finally:
        server.stop()
    assert "embeddings/4" in server.log.read_text()


def test_a_damaged_embedding_replayed_at_start_is_named_and_the_rest_served(gallery):
    """The start keeps its snapshots and replays the change log after them: a bad row there
    stopped the server from starting (found when packed embeddings came to share leaf pages)."""
    assert list((gallery / "indexes").glob("*.snap"))
    stored = raw_row(gallery, "embeddings", u64(3))  # biden's face
    assert flip_all(gallery / "catalog" / "data.mdb", stored[-40:], 30) >= 1   # inside the row's integrity tag
    server = ServerProcess(gallery).start()
    try:
        assert any(m["identity"] == "obama" for m in search_json(server, FACES / "obama" / "obama_03.jpg"))
        assert not any(m["identity"] == "biden" for m in search_json(server, FACES / "biden" / "biden_02.jpg"))
        damaged = json.loads(server.cli("check", "--json", check=False).stdout)["damaged"]
        assert [(d["table"], d["key"], d["problem"]) for d in damaged] == [("embeddings", "3", "failed its integrity tag")]
    finally:
        server.stop()


def test_a_truncated_catalog_is_refused_at_open(gallery):
    path = gallery / "catalog" / "data.mdb"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cmd = [sys.executable, "-m", "facebank", "serve", "--data", str(gallery), "--listen", f"127.0.0.1:{free_port()}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1  # not killed by SIGBUS (-7)
    assert_one_line_refusal(result, "is truncated")
