"""A catalog and its keys belong together: an operator's mistake with the keys
directory (unmounted volume, missing file, a second data directory, deleting
the master key) is refused with one line, and changes nothing anywhere."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FACES, ServerProcess, free_port, run_cli


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (but lock files) with its SHA-256: what "nothing changed" means."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name not in ("lock.mdb", "facebank.lock", "keyring.lock")
    }


def serve_once(data: Path, *args: str, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """`facebank serve` expected to refuse: it must exit by itself, with one line."""
    cmd = [sys.executable, "-m", "facebank", "serve", "--data", str(data), "--listen", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_refusal(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr[-2000:]


@pytest.fixture
def enrolled(tmp_path):
    """A data directory whose keys live on their own volume, with obama enrolled."""
    data, keys = tmp_path / "data", tmp_path / "keysvol"
    server = ServerProcess(data, args=("--keys-dir", str(keys))).start()
    server.cli("enroll", str(FACES / "obama" / "obama_01.jpg"), "--identity", "obama")
    server.stop()
    return data, keys


def search_names(server: ServerProcess) -> str:
    return server.cli("search", str(FACES / "obama" / "obama_02.jpg")).stdout


def test_an_unmounted_keys_volume_is_refused_and_changes_nothing(enrolled, tmp_path):
    data, keys = enrolled
    before = tree_digest(data), tree_digest(keys)
    wrong = tmp_path / "not-mounted"
    result = serve_once(data, "--keys-dir", str(wrong))
    assert_one_line_refusal(result, "no master key")
    assert not wrong.exists()  # nothing created where the keys were expected
    assert (tree_digest(data), tree_digest(keys)) == before
    server = ServerProcess(data, args=("--keys-dir", str(keys))).start()  # with the real keys: everyone is still there
    try:
        assert "obama" in search_names(server)
    finally:
        server.stop()


def test_an_existing_wrong_keys_directory_is_refused_and_left_empty(enrolled, tmp_path):
    """A directory that exists but holds no keys (another volume, a typo that names a real
    directory): refused, and not even a lock file is left in it."""
    data, keys = enrolled
    before = tree_digest(data), tree_digest(keys)
    wrong = tmp_path / "somewhere-else"
    wrong.mkdir()
    assert_one_line_refusal(serve_once(data, "--keys-dir", str(wrong)), "no master key")
    assert list(wrong.iterdir()) == []
    assert (tree_digest(data), tree_digest(keys)) == before


def test_a_missing_slot_file_is_refused_and_changes_nothing(enrolled, tmp_path):
    data, keys = enrolled
    aside = tmp_path / "keyslots.bin"
    shutil.move(keys / "keyslots.bin", aside)
    before = tree_digest(data), tree_digest(keys)
    assert_one_line_refusal(serve_once(data, "--keys-dir", str(keys)), "keyslots.bin is missing")
    assert (tree_digest(data), tree_digest(keys)) == before
    shutil.move(aside, keys / "keyslots.bin")
    server = ServerProcess(data, args=("--keys-dir", str(keys))).start()
    try:
        assert "obama" in search_names(server)
    finally:
        server.stop()


def test_deleting_the_master_key_is_refused_without_writing_a_new_one(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    server.cli("enroll", str(FACES / "obama" / "obama_01.jpg"), "--identity", "obama")
    server.stop()
    (data / "keys" / "master.key").unlink()
    before = tree_digest(data)
    assert_one_line_refusal(serve_once(data), "no master key")
    assert not (data / "keys" / "master.key").exists()
    assert tree_digest(data) == before


def test_another_catalogs_keys_are_refused(enrolled, tmp_path):
    data, keys = enrolled
    other = tmp_path / "other"
    ServerProcess(other).start().stop()  # a second catalog, with its own keys in other/keys
    before = tree_digest(data), tree_digest(other)
    result = serve_once(data, "--keys-dir", str(other / "keys"))
    assert_one_line_refusal(result, "not the one the catalog")
    assert (tree_digest(data), tree_digest(other)) == before


def test_two_data_directories_cannot_share_one_keys_directory(enrolled, tmp_path):
    data, keys = enrolled
    first = ServerProcess(data, args=("--keys-dir", str(keys))).start()
    try:
        # at the same time: the keys are locked
        assert_one_line_refusal(serve_once(tmp_path / "second", "--keys-dir", str(keys)), "holds the data keys of catalog")
        assert not (tmp_path / "second" / "catalog").exists()
    finally:
        first.stop()
    # one after the other: the keys belong to the first catalog
    assert_one_line_refusal(serve_once(tmp_path / "second", "--keys-dir", str(keys)), "holds the data keys of catalog")
    assert not (tmp_path / "second" / "catalog").exists()


def test_key_commands_honour_the_keys_directory(enrolled):
    data, keys = enrolled
    before = tree_digest(data)
    refused = run_cli("keys", "create", "--data", str(data), "--role", "admin", check=False)  # default DATA/keys: wrong here
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and "no master key" in refused.stderr
    assert tree_digest(data) == before and not (data / "keys").exists()
    made = run_cli("keys", "create", "--data", str(data), "--keys-dir", str(keys), "--role", "admin")
    assert made.stdout.strip().startswith("fbk_")
    listed = run_cli("keys", "list", "--data", str(data), "--json", env={"FACEBANK_KEYS_DIR": str(keys)})
    assert '"role": "admin"' in listed.stdout


def test_data_files_are_private(enrolled):
    data, keys = enrolled
    for path in [data, data / "catalog", data / "indexes", data / "audit", keys]:
        assert path.stat().st_mode & 0o077 == 0, path
    for path in [*(data / "catalog").glob("*.mdb"), *(data / "indexes").glob("*.snap"), keys / "keyslots.bin", keys / "master.key"]:
        assert path.stat().st_mode & 0o077 == 0, path
