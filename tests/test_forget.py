"""Forget: nothing of the identity can be found, read or recovered afterwards."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from conftest import ServerProcess, make_config, single_person_photos, synthetic_faces
from facebank.index import identities
from facebank.client import Client
from facebank.errors import DataCorruption, NotFound
from facebank.index.catalog import Catalog
from facebank.index.catalog_tables import RecordMac
from facebank.index.forget import CRASH_ENV
from facebank.index.keyring import Keyring, load_master_key
from facebank.index.snapshot import read_snapshot
from facebank.index.keyring import embedding_aad, identity_owner, snapshot_owner
from facebank.server.app import start
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport

PEOPLE = single_person_photos()


def enroll_everyone(fb: Client, collection: str = "default") -> None:
    for identity, shots in PEOPLE.items():
        fb.enroll(identity, [s.path for s in shots[:2]], collection=collection,
                  display_name=f"Display {identity.title()}", metadata={"employee": f"EMP-{identity.upper()}-77"})


@pytest.fixture
def served(tmp_path, embedder):
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    running = start(make_config(tmp_path / "data"), engine=engine)
    fb = Client(GrpcTransport(f"127.0.0.1:{running.port}"))
    yield fb, engine, tmp_path / "data"
    fb.close()
    running.stop(grace=2)


def test_no_search_started_after_the_answer_returns_the_identity(served):
    fb, _, _ = served
    enroll_everyone(fb)
    probe = PEOPLE["obama"][2].path.read_bytes()
    records: list[tuple[float, bool]] = []
    stop = threading.Event()

    def searcher():
        local = Client(GrpcTransport(fb.transport.address))
        while not stop.is_set():
            started = time.monotonic()
            faces = local.search(probe).faces
            records.append((started, bool(faces[0].matches) and faces[0].matches[0].identity_id == "obama"))
        local.close()

    threads = [threading.Thread(target=searcher) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    fb.forget("obama")
    answered = time.monotonic()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    before = [found for started, found in records if started < answered]
    after = [found for started, found in records if started > answered]
    assert before and any(before), "the probe must find obama before the forget"
    assert after and not any(after)


def _needles(engine: Engine, identity: str) -> list[bytes]:
    _, vectors = identities.identity_vectors(engine.store, "default", identity)
    needles = [identity.encode(), f"Display {identity.title()}".encode(), f"EMP-{identity.upper()}-77".encode()]
    for v in vectors:
        raw = np.ascontiguousarray(v, dtype="<f4").tobytes()
        needles += [raw, raw[:64], raw[1000:1064]]
    return needles


def _scan(root) -> list[tuple[str, bytes]]:
    return [(str(p), n) for p in root.rglob("*") if p.is_file() for n in [p.read_bytes()]]


def _assert_no_byte_left(root, needles: list[bytes]) -> None:
    files = _scan(root)
    for needle in needles:
        assert not [path for path, blob in files if needle in blob], needle[:40]


def test_after_forget_and_compact_no_byte_of_the_data_dir_holds_it(served):
    fb, engine, data = served
    enroll_everyone(fb)
    engine.maintenance.clean_now()  # snapshots on disk hold every vector now
    needles = _needles(engine, "rose_leslie")
    control = _needles(engine, "kit_harington")
    fb.forget("rose_leslie")
    fb.compact()
    _assert_no_byte_left(data, needles)
    # the scan can find things: the person still enrolled is there, sealed but named
    assert any(control[0] in blob for _, blob in _scan(data))


def test_copies_taken_before_the_forget_cannot_be_read_for_that_identity(served, tmp_path):
    fb, engine, data = served
    enroll_everyone(fb)
    engine.maintenance.clean_now()
    backup = tmp_path / "backup"
    shutil.copytree(data / "indexes", backup / "indexes")
    shutil.copytree(data / "catalog", backup / "catalog", ignore=shutil.ignore_patterns("lock.mdb", "facebank.lock"))
    with engine.store.read() as t:
        cid = t.get_collection("default").id
        snapshot_slot = t.get_meta(f"snapshot:{cid}:enrolled")["slot"]
        identity = t.get_identity(cid, "biden")
        face_ids = t.identity_face_ids(identity.iid)
    fb.forget("biden")

    keyring = Keyring(data / "keys", load_master_key(data / "keys"))  # an attacker holding the master key
    with pytest.raises(NotFound):  # the old snapshot's key is gone...
        keyring.open(snapshot_slot, snapshot_owner(cid, "enrolled"))
    with pytest.raises(NotFound):  # ...and so is the identity's
        keyring.open(identity.key_slot, identity_owner(identity.iid))
    for slot in keyring.used_slots():  # no other key opens the old snapshot either
        try:
            key = keyring.open(slot, snapshot_owner(cid, "enrolled"))
        except (NotFound, DataCorruption):
            continue
        with pytest.raises(DataCorruption):
            read_snapshot(backup / "indexes" / f"{cid}.enrolled.snap", key)
    old = Catalog(backup / "catalog", RecordMac(load_master_key(data / "keys")))  # the backup still holds the sealed vectors, unreadable
    with old.read() as t:
        sealed = [t.get_embedding(f)[2] for f in face_ids]
    old.close()
    assert all(sealed)
    for slot in keyring.used_slots():
        for blob, fid in zip(sealed, face_ids):
            try:
                key = keyring.open(slot, identity_owner(identity.iid))
            except (NotFound, DataCorruption):
                continue
            with pytest.raises(DataCorruption):
                key.open(blob, embedding_aad(fid))
    keyring.close()


def test_receipt_is_chained_and_tampering_shows(served):
    fb, engine, data = served
    enroll_everyone(fb)
    first = fb.forget("obama")
    second = fb.forget("biden", strict=True)
    assert second.prev_hash == first.hash and first.prev_hash == "0" * 64
    assert first.subject_hash and "obama" not in json.dumps(engine.store.audit.read())
    # answered at commit: searches exclude its faces; the vectors leave the index right after
    assert first.verification.passed and first.verification.returned == 0
    observed = 0 if first.index_removal_pending else first.removed["faces"]  # the applier may have been quicker
    assert first.removed["index_vectors"] == observed
    assert not second.index_removal_pending and second.generation_after > second.generation_before
    assert second.verification.in_index == 0 and second.removed["index_vectors"] == second.removed["faces"]
    listing = fb.receipts()
    assert listing.chain_valid and [r.sequence for r in listing.receipts] == [1, 2]
    log = data / "audit" / "receipts.jsonl"
    lines = log.read_text().splitlines()
    lines[0] = lines[0].replace('"faces":2', '"faces":1')
    log.write_text("\n".join(lines) + "\n")
    broken = fb.receipts()
    assert not broken.chain_valid and "altered" in broken.chain_error


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_derived_structures_are_retrained_without_the_identity(served, monkeypatch, kind):
    fb, engine, _ = served
    fb.create_collection("big", index=kind)
    enroll_everyone(fb, "big")
    seg = engine.store.segments.get(engine.store.collection("big").id, "enrolled")
    if kind == "ivf":
        assert seg.index.kind == "flat"  # too few faces to train IVF: becomes IVF once there are enough
        synthetic_faces(engine, "big", 400)
        engine.maintenance.clean_now()
        seg = engine.store.segments.get(engine.store.collection("big").id, "enrolled")
        assert seg.index.kind == "ivf"
        with engine.store.read() as t:
            iid = t.get_identity(seg.cid, "obama").iid
            obama_faces = t.identity_face_ids(iid)
        assert np.isin(obama_faces, seg.index.training_ids).any()
    with engine.maintenance.work_lock:  # hold the background retrain back while we look
        receipt = fb.forget("obama", collection="big")
        engine.store.uow.drain()  # its vectors leave the index (the applier thread does it at once too)
        assert not receipt.derived_clean  # the centroids / graph still reflect its vectors...
        assert fb.stats().pending_retrains == 1
    strict = fb.forget("biden", collection="big", strict=True)
    assert strict.derived_clean and strict.snapshot_rewritten  # ...strict waits for the retrain
    seg = engine.store.segments.get(engine.store.collection("big").id, "enrolled")
    assert not seg.retrain_pending and not seg.index.needs_rebuild
    with engine.store.read() as t:
        remaining = set(t.segment_face_ids(seg.cid, "enrolled"))
    assert set(seg.index.training_ids.tolist()) <= remaining
    assert fb.stats().pending_retrains == 0


@pytest.mark.parametrize("step", ["forget:after-intent", "forget:after-shred", "forget:after-erase", "forget:after-index", "forget:after-receipt"])
def test_sigkill_inside_forget_never_brings_the_identity_back(tmp_path, step):
    data = tmp_path / "data"
    server = ServerProcess(data, env={CRASH_ENV: step}).start()
    gallery = tmp_path / "gallery"
    for identity in ("obama", "biden", "kit_harington"):
        (gallery / identity).mkdir(parents=True)
        for shot in PEOPLE[identity][:2]:
            shutil.copy(shot.path, gallery / identity)
    server.cli("enroll", str(gallery))
    crashed = server.cli("forget", "obama", check=False)
    assert crashed.returncode != 0  # the server died mid-forget
    assert server.proc.wait(timeout=30) != 0
    server.log_file.close()
    restarted = ServerProcess(data, port=server.port).start()
    try:
        assert "obama" not in restarted.cli("identities").stdout
        probe = json.loads(restarted.cli("search", str(PEOPLE["obama"][2].path), "--json").stdout)
        assert probe["faces"][0]["matches"] == []
        stats = json.loads(restarted.cli("stats", "--json").stdout)["collections"][0]
        assert stats["faces"] == stats["indexed"] == 4 and stats["identities"] == 2
        receipts = json.loads(restarted.cli("receipts", "--json").stdout)
        assert receipts["chain_valid"] and len(receipts["receipts"]) == 1
        # and again after one more restart
        restarted.stop()
        restarted = ServerProcess(data, port=server.port).start()
        assert "obama" not in restarted.cli("identities").stdout
        assert "biden" in restarted.cli("identities").stdout
    finally:
        restarted.stop()


def test_forget_removes_cluster_memberships(served, embedder):
    fb, engine, _ = served
    from facebank.v1 import facebank_pb2 as pb

    items = [pb.IngestItem(item_id=p.path.name, collection="default", image=pb.Image(data=p.data, source_ref=p.path.name))
             for p in PEOPLE["obama"][:4] + PEOPLE["kit_harington"][:3]]
    list(fb.ingest(items))
    list(fb.cluster())
    clusters = fb.list_clusters(include_faces=True).clusters
    obama_cluster = max(clusters, key=lambda c: c.size)
    fb.name_cluster(obama_cluster.cluster_id, "obama")
    receipt = fb.forget("obama")
    assert receipt.removed["cluster_memberships"] == obama_cluster.size and receipt.removed["clusters"] == 1
    assert all(c.cluster_id != obama_cluster.cluster_id for c in fb.list_clusters().clusters)


def test_a_restart_during_the_retrain_after_a_forget_starts_from_a_snapshot_without_the_identity(tmp_path, embedder, monkeypatch):
    """Issue 23: a forget drops the collection's snapshot (its key is shredded); when the
    forgotten faces trained the IVF, the retrain that follows takes minutes at 1M faces.
    A snapshot without them (marked: retrain pending) is written before that retrain, so a
    restart meanwhile loads it instead of rebuilding from the catalog, and retrains."""
    from facebank.index import maintenance
    from facebank.v1 import facebank_pb2 as pb

    monkeypatch.setattr(maintenance, "RESNAPSHOT_S", 0.0)
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF)))
    synthetic_faces(engine, "big", 400)
    engine.maintenance.clean_now()
    cid = engine.store.collection("big").id
    seg = engine.store.segments.get(cid, "enrolled")
    assert seg.index.kind == "ivf"
    with engine.store.read() as t:
        faces = {f"synthetic-{i}": t.identity_face_ids(t.get_identity(cid, f"synthetic-{i}").iid) for i in range(400)}
    victim = next(name for name, ids in faces.items() if np.isin(ids, seg.index.training_ids).any())
    monkeypatch.setenv("FACEBANK_DELAY_AT", "rebuild:build=60")   # the retrain of millions of faces
    engine.identities.forget(pb.ForgetRequest(collection="big", identity_id=victim))
    deadline = time.monotonic() + 20
    while not (engine.store.segments.snapshot_path(cid, "enrolled").exists() and engine.store.segments.get(cid, "enrolled").snapshot_seq):
        assert time.monotonic() < deadline, "no snapshot while the retrain runs: a restart now rebuilds from the catalog"
        time.sleep(0.2)
    assert engine.store.segments.get(cid, "enrolled").retrain_pending   # written before the retrain, not after it
    engine.close()   # leaves the retrain mid-build
    monkeypatch.delenv("FACEBANK_DELAY_AT")
    restarted = Engine(make_config(tmp_path / "data", background=False), embedder=embedder)
    try:
        seg = restarted.store.segments.get(cid, "enrolled")
        assert seg.snapshot_seq > 0, "loaded from its snapshot, not rebuilt"
        assert seg.retrain_pending and not np.isin(faces[victim], seg.index.ids()).any()
        restarted.maintenance.clean_now()   # the retrain, resumed
        seg = restarted.store.segments.get(cid, "enrolled")
        assert not seg.retrain_pending and not np.isin(faces[victim], seg.index.training_ids).any()
        assert len(seg.index) == 399
    finally:
        restarted.close()


def test_a_retrain_run_at_once_also_writes_a_snapshot_without_the_identity_first(tmp_path, embedder, monkeypatch):
    """The same window on the other path: `clean_now` (a strict forget waits on it, and a
    compaction runs it first) retrained with no snapshot on disk, so a restart during a
    strict forget's retrain of millions of faces rebuilt everything from the catalog."""
    from facebank.v1 import facebank_pb2 as pb

    engine = Engine(make_config(tmp_path / "data", background=False), embedder=embedder)
    try:
        engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF)))
        synthetic_faces(engine, "big", 400)
        engine.maintenance.clean_now()
        cid = engine.store.collection("big").id
        seg = engine.store.segments.get(cid, "enrolled")
        with engine.store.read() as t:
            faces = {f"synthetic-{i}": t.identity_face_ids(t.get_identity(cid, f"synthetic-{i}").iid) for i in range(400)}
        victim = next(name for name, ids in faces.items() if np.isin(ids, seg.index.training_ids).any())
        engine.identities.forget(pb.ForgetRequest(collection="big", identity_id=victim))   # drops the snapshot
        assert engine.store.segments.get(cid, "enrolled").snapshot_seq == 0
        monkeypatch.setenv("FACEBANK_DELAY_AT", "rebuild:build=4")
        retrain = threading.Thread(target=engine.maintenance.clean_now)
        retrain.start()
        while not engine.store.segments.get(cid, "enrolled").snapshot_seq:
            assert retrain.is_alive(), "the retrain ran with no snapshot on disk: a restart meanwhile rebuilds from the catalog"
            time.sleep(0.05)
        assert engine.store.segments.get(cid, "enrolled").retrain_pending   # written before the retrain, not after it
        retrain.join()
        seg = engine.store.segments.get(cid, "enrolled")
        assert not seg.retrain_pending and not np.isin(faces[victim], seg.index.training_ids).any()
        assert not np.isin(faces[victim], seg.index.ids()).any() and len(seg.index) == 399
    finally:
        engine.close()


def test_writes_go_on_during_a_compaction_and_a_forget_meanwhile_is_compacted_again(served, monkeypatch):
    """Issue 23: compaction (minutes at 1M faces) held every write for its whole copy.
    Writes now go on and are replayed into the copy; a forget during the copy leaves
    its rows in the copy's free pages, so its promise stays due and the next
    compaction removes them."""
    from facebank.index.catalog import scratch_dir
    from facebank.index.forget import PURGE_DUE

    fb, engine, data = served
    enroll_everyone(fb)
    needles = _needles(engine, "rose_leslie")
    monkeypatch.setenv("FACEBANK_DELAY_AT", "compact:copy=8")   # a copy that takes a while
    compacting = threading.Thread(target=fb.compact)
    compacting.start()
    deadline = time.monotonic() + 20
    while not scratch_dir(engine.store.catalog.path).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fb.forget("rose_leslie")
    newcomer = PEOPLE["obama"][0].path
    fb.enroll("newcomer", [newcomer], metadata={"team": "late"})
    assert compacting.is_alive(), "the writes waited for the compaction"
    compacting.join(60)
    monkeypatch.delenv("FACEBANK_DELAY_AT")
    people = {i.id: dict(i.metadata) for i in fb.list_identities()}
    assert people["newcomer"] == {"team": "late"} and "rose_leslie" not in people
    with engine.store.read() as t:
        assert t.get_meta(PURGE_DUE) is not None, "a forget during the copy was counted as compacted"
    fb.compact()
    _assert_no_byte_left(data, needles)
    with engine.store.read() as t:
        assert t.get_meta(PURGE_DUE) is None
    assert fb.search(PEOPLE["obama"][1].path).faces[0].matches[0].identity_id in ("obama", "newcomer")


def test_a_compaction_between_a_forgets_intent_and_its_erasure_does_not_count_it_as_compacted(served, monkeypatch):
    """The rows a forget erases linger in free pages until the next compaction: one that
    ran after the forget's intent but before its erasure has not removed them."""
    from facebank.index.forget import PURGE_DUE

    fb, engine, data = served
    enroll_everyone(fb)
    needles = _needles(engine, "rose_leslie")
    monkeypatch.setenv("FACEBANK_DELAY_AT", "forget:after-intent=4")
    forgetting = threading.Thread(target=fb.forget, args=("rose_leslie",))
    forgetting.start()
    time.sleep(1.5)   # the intent is written; the erasure waits
    monkeypatch.delenv("FACEBANK_DELAY_AT")
    fb.compact()
    forgetting.join(30)
    with engine.store.read() as t:
        assert t.get_meta(PURGE_DUE) is not None, "the forget's erased rows are due for no compaction"
    fb.compact()
    _assert_no_byte_left(data, needles)


@pytest.mark.parametrize("during", ["rebuild:build", "rebuild:trained"])
def test_forgets_arriving_during_a_retrain_coalesce_into_it(tmp_path, embedder, monkeypatch, caplog, during):
    """Issue 23: a forget arriving while a retrain ran (at 1M: 150 s, most of it reading the
    catalog) made a second full retrain once the first ended. Its faces are now left out of
    the retrain under way: before its training when they were read with the rest, by training
    again on what was read (no second catalog read) when they were in the sample already."""
    import logging

    from facebank.v1 import facebank_pb2 as pb

    caplog.set_level(logging.INFO, logger="facebank.index.maintenance")
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    try:
        engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF)))
        synthetic_faces(engine, "big", 400)
        synthetic_faces(engine, "big", 30, identity="crowd", seed=1)  # 30 faces: some are in any training sample
        engine.maintenance.clean_now()
        cid = engine.store.collection("big").id
        seg = engine.store.segments.get(cid, "enrolled")
        assert seg.index.kind == "ivf"
        with engine.store.read() as t:
            faces = {name: t.identity_face_ids(t.get_identity(cid, name).iid) for name in [f"synthetic-{i}" for i in range(400)] + ["crowd"]}
        first = next(name for name, ids in faces.items() if name != "crowd" and np.isin(ids, seg.index.training_ids).any())
        second = "crowd"
        monkeypatch.setenv("FACEBANK_DELAY_AT", f"{during}=5")
        engine.identities.forget(pb.ForgetRequest(collection="big", identity_id=first))
        deadline = time.monotonic() + 20
        while not any("(retrain)" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the retrain after the forget did not start"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the delay: the catalog was read, or the sample trained, with `second` in it
        engine.identities.forget(pb.ForgetRequest(collection="big", identity_id=second))
        deadline = time.monotonic() + 60
        while engine.maintenance.pending_retrains or not any("rebuilt" in r.getMessage() and "(retrain)" in r.getMessage()
                                                             for r in caplog.records):
            assert time.monotonic() < deadline, "the retrain did not end"
            time.sleep(0.2)
        time.sleep(1.0)
        seg = engine.store.segments.get(cid, "enrolled")
        gone = np.concatenate([faces[first], faces[second]])
        assert not seg.retrain_pending
        assert not np.isin(gone, seg.index.training_ids).any() and not np.isin(gone, seg.index.ids()).any()
        assert len(seg.index) == 430 - len(gone)
        rebuilt = [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage() and "(retrain)" in r.getMessage()]
        assert len(rebuilt) == 1, f"the second forget made a retrain of its own: {rebuilt}"
    finally:
        engine.close()
