"""The catalog, keyring and live indexes together: transactions, restarts,
snapshots, rebuilds, and a random add/delete/forget state machine."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import SOAK, assert_derived_tables_match, open_store
from facebank.index import identities
from facebank.errors import DataCorruption, FailedPrecondition, InvalidArgument, NotFound
from facebank.index.forget import forget_identity
from facebank.index.records import ENROLLED, IndexSettings
from facebank.index.snapshot import read_header
from facebank.index.sealed_faces import NewFace

DIM = 32


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def face(seed: int, sha: int | None = None) -> NewFace:
    return NewFace([0, 0, 50, 50], [[10, 10]] * 5, 0.9, {"passed": True}, vec(seed), f"{seed if sha is None else sha:064x}", f"photo-{seed}.jpg", "m")


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    yield s
    s.close()


def top(store, seed, k=1, collection="c"):
    return [h.identity.external_id for h in store.search(collection, vec(seed)[None], k)[0]]


def test_a_failing_enrollment_leaves_nothing(store):
    used_before = store.keyring.used_slots()
    broken = face(2)
    broken = NewFace(**{**broken.__dict__, "embedding": np.ones(DIM + 1, np.float32)})  # wrong size: fails inside the txn
    with pytest.raises(InvalidArgument, match="cannot go into collection"):
        identities.enroll(store, "c", "alice", "", {}, [face(1), broken])
    with pytest.raises(NotFound):
        identities.identity(store, "c", "alice")
    assert store.stats(store.collection("c"))["faces"] == 0
    assert len(store.segments.get(store.collection("c").id, ENROLLED).index) == 0
    assert store.keyring.used_slots() == used_before  # the new identity's key was shredded


def test_an_identity_with_many_faces_does_not_crowd_the_others_out(store):
    """200 faces of one person nearest to the first query fill the first k hits;
    the search looks further for that query only, and the batch answers exactly
    as brute force over every face does (the index is exact at this size)."""
    rng = np.random.default_rng(3)
    query = vec(0)
    crowd = query + 0.05 * rng.standard_normal((200, DIM)).astype(np.float32)
    identities.enroll(store, "c", "crowd", "", {}, [NewFace(**{**face(1000 + i).__dict__, "embedding": v / np.linalg.norm(v)}) for i, v in enumerate(crowd)])
    for i in range(30):
        identities.enroll(store, "c", f"p{i}", f"P {i}", {}, [face(i + 1)])
    queries = np.stack([query, vec(99)])
    answer = store.search("c", queries, 5)
    faces = {}
    for rec_id in ["crowd", *(f"p{i}" for i in range(30))]:
        for face_id, v in zip(*identities.identity_vectors(store, "c", rec_id)):
            faces[face_id] = (rec_id, v)
    for row, q in enumerate(queries):
        best: dict[str, tuple[float, list[int]]] = {}
        for face_id, (owner, v) in sorted(faces.items(), key=lambda kv: -float(kv[1][1] @ q)):
            best.setdefault(owner, (float(v @ q), []))[1].append(face_id)
        expected = sorted(best.items(), key=lambda kv: -kv[1][0])[:5]
        got = answer[row]
        assert [h.identity.external_id for h in got] == [owner for owner, _ in expected]
        assert [h.score for h in got] == pytest.approx([score for _, (score, _) in expected], abs=1e-5)
        assert len(got[0].face_ids) == (200 if row == 0 else 1)  # every face of the crowd was looked at
    assert answer.face_count.sum() == len(answer.face_ids)


def test_everything_survives_a_restart(tmp_path):
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    for i in range(20):
        identities.enroll(s, "c", f"p{i}", f"Person {i}", {"k": str(i % 3)}, [face(i)])
    s.close()
    s = open_store(tmp_path / "d")
    assert top(s, 7) == ["p7"]
    assert identities.identity(s, "c", "p7")[0].display_name == "Person 7"
    assert s.stats(s.collection("c"))["indexed"] == 20
    s.close()


def test_snapshot_plus_replay_of_newer_changes(tmp_path):
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    for i in range(10):
        identities.enroll(s, "c", f"p{i}", "", {}, [face(i)])
    s.maintenance.clean_now()   # writes snapshots at this point
    snap_seq = read_header(s.segments.snapshot_path(1, ENROLLED))["seq"]
    for i in range(10, 15):
        identities.enroll(s, "c", f"p{i}", "", {}, [face(i)])
    identities.delete_face(s, "c", identities.identity(s, "c", "p3")[1][0].face_id)
    # simulate a crash: no close(), so no new snapshot; release the locks by hand
    s.maintenance.stop()
    s._release()
    s = open_store(tmp_path / "d")
    seg = s.segments.get(1, ENROLLED)
    assert seg.snapshot_seq == snap_seq and seg.applied_seq > snap_seq  # loaded, then replayed
    assert top(s, 12) == ["p12"] and "p3" not in top(s, 3, k=3)
    assert len(seg.index) == 14
    s.close()


def test_a_shutdown_after_a_few_changes_keeps_the_snapshot_and_the_next_start_replays_them(tmp_path):
    """Issue 23: every shutdown rewrote the snapshot of every changed collection, 20 GB at
    10M faces for one enrollment, holding the exit past its 30 s grace."""
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    for i in range(10):
        identities.enroll(s, "c", f"p{i}", "", {}, [face(i)])
    s.maintenance.clean_now()
    path = s.segments.snapshot_path(1, ENROLLED)
    snap_seq = read_header(path)["seq"]
    for i in range(10, 15):
        identities.enroll(s, "c", f"p{i}", "", {}, [face(i)])
    identities.delete_face(s, "c", identities.identity(s, "c", "p3")[1][0].face_id)
    s.close()
    assert read_header(path)["seq"] == snap_seq, "a shutdown rewrote the whole snapshot for 6 changes"
    s = open_store(tmp_path / "d")
    seg = s.segments.get(1, ENROLLED)
    assert seg.snapshot_seq == snap_seq and seg.applied_seq > snap_seq  # loaded, then replayed
    assert top(s, 12) == ["p12"] and "p3" not in top(s, 3, k=3) and len(seg.index) == 14
    s.close()


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_missing_or_corrupt_snapshot_is_rebuilt_from_the_catalog(tmp_path, damage):
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    for i in range(30):
        identities.enroll(s, "c", f"p{i}", "", {}, [face(i)])
    s.close()
    path = tmp_path / "d" / "indexes" / "1.enrolled.snap"
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    if damage != "delete":
        with pytest.raises(DataCorruption):
            read_header(path)
    s = open_store(tmp_path / "d")
    seg = s.segments.get(1, ENROLLED)
    assert seg.snapshot_seq == 0 and len(seg.index) == 30  # rebuilt
    assert top(s, 21) == ["p21"]
    s.close()


def test_orphaned_data_keys_are_shredded_at_start(tmp_path):
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    identities.enroll(s, "c", "p", "", {}, [face(1)])
    orphan = s.keyring.allocate([b"identity:999"])[0]  # as if a crash hit between allocation and commit
    s.close()
    s = open_store(tmp_path / "d")
    assert orphan.slot not in s.keyring.used_slots()
    assert top(s, 1) == ["p"]
    s.close()


def _auto_collection(tmp_path, n: int):
    """A store with collection "c" (index auto) of n one-face identities, and its enrolled segment."""
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    for i in range(n):
        identities.enroll(s, "c", f"p{i}", "", {}, [face(i)])
    return s, s.segments.get(1, ENROLLED)


def test_auto_index_moves_from_flat_to_ivf_in_the_background(tmp_path, monkeypatch):
    import facebank.index.factory as factory

    monkeypatch.setattr(factory, "FLAT_MAX", 400)
    s, seg = _auto_collection(tmp_path, 450)
    assert seg.index.kind == "flat" and s.segments.wants_rebuild(seg) == "flat->ivf"
    s.maintenance.clean_now()
    seg = s.segments.get(1, ENROLLED)
    assert seg.index.kind == "ivf" and len(seg.index) == 450
    assert top(s, 123) == ["p123"]
    s.close()


def test_auto_index_moves_to_8bit_codes_past_compress_min_and_restarts_from_its_snapshot(tmp_path, monkeypatch):
    import facebank.index.factory as factory

    monkeypatch.setattr(factory, "FLAT_MAX", 300)
    monkeypatch.setattr(factory, "COMPRESS_MIN", 400)
    s, seg = _auto_collection(tmp_path, 450)
    assert s.segments.wants_rebuild(seg) == "flat->ivf_sq8"
    s.maintenance.clean_now()
    seg = s.segments.get(1, ENROLLED)
    assert seg.index.kind == "ivf_sq8" and len(seg.index) == 450
    assert top(s, 123) == ["p123"]
    s.close()  # writes its snapshot
    s = open_store(tmp_path / "d")
    seg = s.segments.get(1, ENROLLED)
    assert seg.snapshot_seq > 0  # loaded from the snapshot, not rebuilt
    assert seg.index.kind == "ivf_sq8" and len(seg.index) == 450 and top(s, 321) == ["p321"]
    s.close()


def test_wrong_master_key_cannot_open_the_data(tmp_path, monkeypatch):
    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings())
    identities.enroll(s, "c", "p", "", {}, [face(1)])
    s.close()
    (tmp_path / "d" / "keys" / "master.key").unlink()
    monkeypatch.setenv("FACEBANK_MASTER_KEY", "A" * 43 + "=")
    with pytest.raises(FailedPrecondition, match="is not the one the catalog .* was created with"):
        open_store(tmp_path / "d")


def test_master_key_file_is_private(tmp_path):
    s = open_store(tmp_path / "d")
    mode = os.stat(tmp_path / "d" / "keys" / "master.key").st_mode & 0o777
    s.close()
    assert mode == 0o600
    os.chmod(tmp_path / "d" / "keys" / "master.key", 0o644)
    from facebank.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="chmod 600"):
        open_store(tmp_path / "d")


def test_second_process_on_the_same_data_is_refused(tmp_path):
    from facebank.errors import FailedPrecondition

    s = open_store(tmp_path / "d")
    with pytest.raises(FailedPrecondition, match="another facebank process"):
        open_store(tmp_path / "d")
    s.close()


class StoreMachine(RuleBasedStateMachine):
    """Random enroll / delete-face / forget / restart, with the invariant that
    search finds exactly the live faces (flat: exact) and nothing else."""

    def __init__(self):
        super().__init__()
        import tempfile
        from pathlib import Path

        self.dir = Path(tempfile.mkdtemp())
        self.store = open_store(self.dir)
        self.store.create_collection("c", "m", DIM, 0.4, IndexSettings(kind="flat"))
        self.live: dict[int, str] = {}      # face seed -> identity
        self.face_ids: dict[int, int] = {}  # face seed -> face id
        self.identities: set[str] = set()   # enrolled and not forgotten (deleting faces keeps it)
        self.gone: dict[int, str] = {}      # face seed -> identity, for faces deleted or forgotten
        self.seed = 0

    @rule(identity=st.sampled_from(["a", "b", "c", "d", "e"]))
    def enroll(self, identity):
        self.seed += 1
        _, stored = identities.enroll(self.store, "c", identity, "", {"team": "ab" if identity in "ab" else "cde"}, [face(self.seed)])
        self.live[self.seed] = identity
        self.face_ids[self.seed] = stored[0].face.face_id
        self.identities.add(identity)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_face(self, data):
        seed = data.draw(st.sampled_from(sorted(self.live)))
        identities.delete_face(self.store, "c", self.face_ids.pop(seed))
        self.gone[seed] = self.live.pop(seed)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def forget(self, data):
        identity = data.draw(st.sampled_from(sorted(set(self.live.values()))))
        forget_identity(self.store, self.store.maintenance, "c", identity)
        self.identities.discard(identity)
        for seed in [s for s, i in self.live.items() if i == identity]:
            self.gone[seed] = self.live.pop(seed)
            self.face_ids.pop(seed)

    @rule()
    def restart(self):
        self.store.close()
        self.store = open_store(self.dir)

    @rule()
    def snapshot(self):
        self.store.maintenance.clean_now()

    @invariant()
    def search_finds_exactly_the_live_faces(self):
        for seed in list(self.gone)[-5:]:  # at once, before the index drops their vectors
            hits = self.store.search("c", vec(seed)[None], 5)[0]
            assert all(h.score < 0.999 for h in hits), "a removed face was still returned"
        self.store.uow.drain()
        seg = self.store.segments.get(1, ENROLLED)
        assert sorted(seg.index.ids().tolist()) == sorted(self.face_ids.values())
        for seed, identity in list(self.live.items())[:5]:
            hits = self.store.search("c", vec(seed)[None], 1)[0]
            assert hits and hits[0].identity.external_id == identity and hits[0].score > 0.999
            # filtered: exactly the live faces of the team's identities, ranked as brute force ranks them
            team = "ab" if identity in "ab" else "cde"
            found = self.store.search("c", vec(seed)[None], 5, {"team": team})[0]
            best: dict[str, float] = {}
            for other_seed, owner in self.live.items():
                if owner in team:
                    best[owner] = max(best.get(owner, -2.0), float(vec(other_seed) @ vec(seed)))
            expected = sorted(best, key=lambda o: -best[o])[:5]
            assert [h.identity.external_id for h in found] == expected
            assert [h.score for h in found] == pytest.approx([best[o] for o in expected], abs=1e-5)

    @invariant()
    def counts_are_those_of_the_records(self):
        assert_derived_tables_match(self.store)
        stats = self.store.stats(self.store.collection("c"))
        assert (stats["identities"], stats["faces"]) == (len(self.identities), len(self.live))

    def teardown(self):
        self.store.close()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=25 * SOAK, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_rebuild_during_a_forget_leaves_out_the_shredded_identity(store):
    """Between a forget's key shred and the erase of its records, readers still see
    the records; a rebuild or a read then skips them instead of failing."""
    for i in range(6):
        identities.enroll(store, "c", f"p{i}", "", {}, [face(i), face(100 + i)])
    rec, faces = identities.identity(store, "c", "p2")
    store.keyring.shred([rec.key_slot])  # the state inside forget, after step 2
    ids, _ = store.vectors_of([f.face_id for f in faces] + [identities.identity(store, "c", "p3")[1][0].face_id])
    assert len(ids) == 1 and ids[0] not in {f.face_id for f in faces}
    segment = store.segments.get(store.collection("c").id, ENROLLED)
    segment.retrain_pending = True
    store.maintenance.clean_now()  # rebuilds from the catalog: must not fail on p2
    rebuilt = store.segments.get(store.collection("c").id, ENROLLED)
    assert rebuilt is not segment and len(rebuilt.index) == 10 and "p2" not in top(store, 2, k=3)
    forget_identity(store, store.maintenance, "c", "p2")  # finishing the forget leaves everything consistent
    assert store.stats(store.collection("c"))["faces"] == store.stats(store.collection("c"))["indexed"] == 10
    assert top(store, 3) == ["p3"]


def test_a_retrain_after_a_forget_keeps_the_ivf_lists_and_effort(tmp_path):
    """1,248 faces are the smallest collection with 32 lists (39 per list); one face
    fewer would be sized at 16. A forget's retrain keeps 32 lists and at least the
    nprobe it had: lists change on resize only."""
    from facebank.index.vectors import nlist_for

    s = open_store(tmp_path / "d")
    s.create_collection("c", "m", DIM, 0.4, IndexSettings(kind="ivf"))
    identities.enroll_many(s, "c", [(f"p{i}", "", {}, [face(i)]) for i in range(1248)])
    s.maintenance.clean_now()
    before = s.segments.get(s.collection("c").id, ENROLLED).index
    assert before.kind == "ivf" and before.nlist == nlist_for(1248) == 32 and nlist_for(1247) == 16
    forget_identity(s, s.maintenance, "c", "p0")
    s.maintenance.clean_now()
    after = s.segments.get(s.collection("c").id, ENROLLED)
    assert after.index is not before and not after.retrain_pending and len(after.index) == 1247
    assert after.index.nlist == 32 and after.index.trained_n == 1248  # the size the lists were chosen for
    assert after.index.default_nprobe >= before.default_nprobe
    assert top(s, 1) == ["p1"]
    # Grown past 4x that size, the next retrain re-sizes the lists instead of keeping them.
    identities.enroll_many(s, "c", [(f"q{i}", "", {}, [face(10_000 + i)]) for i in range(4000)])
    with s.maintenance.work_lock:  # the resize alone would be due; a forget comes first
        forget_identity(s, s.maintenance, "c", "p1")
    s.maintenance.clean_now()
    grown = s.segments.get(s.collection("c").id, ENROLLED)
    assert len(grown.index) == 5246 and grown.index.nlist == nlist_for(5246) == 128 and grown.index.trained_n == 5246
    s.close()
