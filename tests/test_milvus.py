"""Vectors in Milvus (`serve --vectors`): a real Milvus standalone server (PyPI
`milvus`, embedded) and Milvus Lite. The API suite runs against both through the
`client` fixture; here: crashes between the catalog commit and the Milvus write,
deletion that leaves Milvus's files, and the operator's mistakes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ServerProcess, free_port, make_config, run_cli, single_person_photos
from facebank.client import Client
from facebank.errors import FailedPrecondition
from facebank.index.faults import CRASH_ENV
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport, LocalTransport


def milvus_rows(spec: str, prefix: str, segment: str = "enrolled") -> set[int]:
    """Face ids a Strong-consistency query finds in this store's collection(s) of `segment`."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri="http://" + spec.removeprefix("milvus://"))
    try:
        names = [n for n in client.list_collections() if n.startswith(prefix + "_") and f"_{segment}_" in n]
        assert len(names) == 1, names  # a replaced collection is dropped
        rows = client.query(names[0], filter="face_id >= 0", output_fields=["face_id"], consistency_level="Strong", limit=16384)
        return {int(r["face_id"]) for r in rows}
    finally:
        client.close()


def store_prefix(data_dir: Path) -> str:
    from facebank.index.store import FaceStore

    store = FaceStore(data_dir)
    try:
        return store.milvus_prefix
    finally:
        store.close()


def photo(identity: str, n: int = 0) -> Path:
    return single_person_photos()[identity][n].path


def test_a_crash_between_the_catalog_commit_and_milvus_is_replayed(tmp_path, milvus_server):
    """SIGKILL after the LMDB commit and before the Milvus write, for an enrollment and
    for a forget: after a restart Milvus holds exactly the catalog's faces."""
    data, vectors = tmp_path / "data", ("--vectors", milvus_server.spec)
    server = ServerProcess(data, args=vectors).start()
    for identity in ("obama", "biden"):
        server.cli("enroll", str(photo(identity)), "--identity", identity)
    server.cli("compact")  # a snapshot records what Milvus has: the restarts below replay only the tail
    server.stop()

    crashing = ServerProcess(data, args=vectors, env={CRASH_ENV: "uow:after-commit"}).start()
    assert crashing.cli("enroll", str(photo("kit_harington")), "--identity", "kit_harington", check=False).returncode != 0
    assert crashing.proc.wait(timeout=30) == -9
    crashing.kill()

    server = ServerProcess(data, args=vectors).start()
    found = json.loads(server.cli("search", str(photo("kit_harington", 1)), "--json").stdout)
    assert found["faces"][0]["matches"][0]["identity"] == "kit_harington"
    stats = json.loads(server.cli("stats", "--json").stdout)
    faces = {i: [f.face_id for f in Client(GrpcTransport(server.address)).get_identity(i).faces] for i in ("obama", "biden", "kit_harington")}
    server.stop()
    prefix = store_prefix(data)
    assert milvus_rows(milvus_server.spec, prefix) == {f for ids in faces.values() for f in ids}
    assert stats["collections"][0]["faces"] == 3

    crashing = ServerProcess(data, args=vectors, env={CRASH_ENV: "uow:after-commit"}).start()
    assert crashing.cli("forget", "obama", check=False).returncode != 0
    assert crashing.proc.wait(timeout=30) == -9
    crashing.kill()
    assert set(faces["obama"]) <= milvus_rows(milvus_server.spec, prefix)  # the crash came before Milvus heard of it

    server = ServerProcess(data, args=vectors).start()
    answer = json.loads(server.cli("search", str(photo("obama", 1)), "--json").stdout)
    assert all(m["identity"] != "obama" for f in answer["faces"] for m in f["matches"])
    server.stop()
    assert milvus_rows(milvus_server.spec, prefix) == set(faces["biden"] + faces["kit_harington"])


def test_forget_leaves_nothing_in_milvus_storage_after_compaction_and_gc(tmp_path, embedder, milvus_server):
    """The forgotten identity's vectors are in Milvus's stored segments before; after the
    forget, Milvus's compaction and garbage collection (tolerance set short by the fixture),
    a byte scan of its storage finds none of them. Its message log (rocksmq here) keeps
    every write until its own retention: the receipt and the README say so."""
    engine = Engine(make_config(tmp_path / "data", vectors=milvus_server.spec), embedder=embedder)
    fb = Client(LocalTransport(engine))
    storage = milvus_server.base_dir / "data"
    try:
        # Other tests enroll these photos into collections of their own on the same Milvus
        # server; a mirrored photo gives embeddings that only this test stores.
        mirrored = tmp_path / "rose_leslie_mirrored.jpg"
        Image.open(photo("rose_leslie")).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
        fb.enroll("rose_leslie", [mirrored])
        for identity in ("biden", "kit_harington"):
            fb.enroll(identity, [photo(identity)])
        engine.maintenance.clean_now()  # a snapshot flushes: the vectors reach Milvus's stored segments
        face_ids = [f.face_id for f in fb.get_identity("rose_leslie").faces]
        _, vectors = engine.store.vectors_of(face_ids)
        needles = [v.astype(np.float32).tobytes()[:64] for v in vectors]
        assert _files_holding(storage, needles), "the scan must see the vectors before the forget"
        receipt = fb.forget("rose_leslie")
        assert receipt.verification.passed and receipt.verification.method == "own-faces"
        assert receipt.removed["index_vectors"] == len(face_ids)
        assert "Strong-consistency query then found none" in receipt.note and "compaction requested" in receipt.note
        assert "message log" in receipt.note
        deadline = time.monotonic() + 240
        while (left := _files_holding(storage, needles)) and time.monotonic() < deadline:
            time.sleep(3)
        assert not left, f"the forgotten vectors are still in {left}"
        assert fb.search(photo("biden", 1)).faces[0].matches[0].identity_id == "biden"
    finally:
        fb.close()


def _files_holding(storage: Path, needles: list[bytes]) -> list[str]:
    """Milvus's stored segments and index files (not its message log, `rocksmq/`)."""
    found = []
    for path in storage.rglob("*"):
        if path.is_file() and "rocksmq" not in path.parts:
            try:
                data = path.read_bytes()
            except OSError:  # removed while scanning
                continue
            if any(n in data for n in needles):
                found.append(str(path.relative_to(storage)))
    return found


def test_a_data_directory_keeps_its_vectors_where_it_started(tmp_path, embedder):
    """Started on Milvus Lite, then without --vectors: refused in one line, nothing changed."""
    data, lite = tmp_path / "data", f"milvus-lite:{tmp_path / 'vectors.db'}"
    with Client(LocalTransport(Engine(make_config(data, vectors=lite), embedder=embedder))) as fb:
        fb.enroll("obama", [photo("obama")])
    before = (data / "catalog" / "data.mdb").read_bytes()
    with pytest.raises(FailedPrecondition, match=r"keeps its vectors in milvus-lite:.*vectors\.db; start with --vectors"):
        Engine(make_config(data), embedder=embedder)
    assert (data / "catalog" / "data.mdb").read_bytes() == before
    with Client(LocalTransport(Engine(make_config(data, vectors=lite), embedder=embedder))) as fb:
        assert fb.search(photo("obama", 1)).faces[0].matches[0].identity_id == "obama"


@pytest.mark.parametrize("vectors, says", [
    (f"milvus://127.0.0.1:{free_port()}", "cannot reach Milvus at milvus://127.0.0.1:"),
    ("milvus:/somewhere", "must be faiss, milvus://HOST:PORT or milvus-lite:PATH.db"),
    ("milvus-lite:vectors.sqlite", "a Milvus Lite file must end in .db"),
])
def test_a_wrong_vectors_option_is_refused_in_one_line_before_anything_is_created(tmp_path, vectors, says):
    data = tmp_path / "data"
    server = ServerProcess(data, args=("--vectors", vectors))
    with pytest.raises(RuntimeError, match="server did not start"):
        server.start()
    lines = server.log.read_text().strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in lines[0], lines
    assert not data.exists()


def test_a_search_milvus_cannot_answer_is_unavailable_not_internal(tmp_path, embedder):
    from facebank.errors import Unavailable

    engine = Engine(make_config(tmp_path / "data", vectors=f"milvus-lite:{tmp_path / 'vectors.db'}"), embedder=embedder)
    with Client(LocalTransport(engine)) as fb:
        fb.enroll("obama", [photo("obama")])
        engine.store.segments.factory.milvus.client.close()  # the vector store goes away under a running server
        with pytest.raises(Unavailable, match="did not answer.*retry"):
            fb.search(photo("obama", 1))
        assert fb.get_identity("obama").face_count == 1  # the catalog still answers


def test_offline_key_tools_work_while_the_vector_store_is_down(tmp_path, embedder, milvus_server):
    """`facebank keys --data` reads and writes the catalog only: a Milvus that is down
    (here: the data directory's Milvus moved to an address nothing answers) must not stop
    it, while a server start is refused in one line."""
    from facebank.index.store import FaceStore

    data = tmp_path / "data"
    with Client(LocalTransport(Engine(make_config(data, vectors=milvus_server.spec), embedder=embedder))) as fb:
        fb.enroll("obama", [photo("obama")])
    gone = f"milvus://127.0.0.1:{free_port()}"
    store = FaceStore(data)
    with store.write() as w:
        w.put_meta("vectors", gone)
    store.close()
    secret = run_cli("keys", "create", "--data", str(data), "--role", "admin", "--name", "ops").stdout.strip()
    assert secret
    assert "ops" in run_cli("keys", "list", "--data", str(data)).stdout
    server = ServerProcess(data, args=("--vectors", gone))
    with pytest.raises(RuntimeError, match="server did not start"):
        server.start()
    lines = server.log.read_text().strip().splitlines()
    assert len(lines) == 1 and f"cannot reach Milvus at {gone}" in lines[0], lines
