"""An exact index becomes an IVF by moving into it from its tail (index/flat_move.py):
it ends holding what adding every face to the new centroids would, every face is
searched exactly once while it moves, and the faces are never held twice."""

from __future__ import annotations

import sys
import time

import faiss
import numpy as np
import pytest

from conftest import anonymous_peak, make_config, synthetic_faces, synthetic_vectors
from facebank.index import flat_move, vectors
from facebank.index.flat_move import MovingFlat
from facebank.index.ivf_retrain import move_onto
from facebank.index.records import IndexSettings
from facebank.index.segments import Segment
from facebank.index.vector_source import VectorSource
from facebank.index.vectors import FlatIndex, IvfIndex
from test_ivf_growth import list_contents, unit_vectors
from test_ivf_retrain import searched_while


def exact(n: int, dim: int = 32, seed: int = 1) -> tuple[FlatIndex, np.ndarray, np.ndarray, VectorSource]:
    x = unit_vectors(n, dim, seed)
    ids = np.arange(5, 5 + n, dtype=np.int64) * 7
    index = FlatIndex(dim)
    index.add(ids, x)
    return index, ids, x, VectorSource.of(ids, x)


@pytest.mark.parametrize("family", ["ivf", "ivf_sq8"])
def test_an_exact_index_moved_from_its_tail_holds_what_adding_every_face_to_the_new_centroids_holds(family, monkeypatch):
    """Piece by piece (500 faces here): list by list the same faces with the same codes as the
    new centroids given every vector through FAISS's add_with_ids, each list exactly its size,
    the same answers and vectors, the exact index emptied, and the nprobe calibrated."""
    monkeypatch.setattr(flat_move, "PIECE", 500)
    old, ids, x, source = exact(6000)
    fresh, calibration = IvfIndex.trained_empty(old.dim, source, family=family, seed=5)
    reference = faiss.deserialize_index(faiss.serialize_index(fresh.index))
    reference.set_direct_map_type(faiss.DirectMap.Hashtable)
    reference.add_with_ids(x, ids)
    segment = Segment(1, "enrolled", old.dim, IndexSettings(kind=family), old)
    assert move_onto(segment, fresh, calibration, source.vectors_of, target_recall=0.95, keeps=False, stop=lambda: False,
                     current=lambda: True)
    assert segment.index is fresh and len(fresh) == len(ids) and len(old) == 0 and len(old.ids()) == 0
    assert list_contents(fresh.index) == list_contents(reference)
    assert [fresh.index.invlists.list_size(i) for i in range(fresh.nlist)] == [reference.invlists.list_size(i) for i in range(fresh.nlist)]
    params = faiss.SearchParametersIVF(nprobe=fresh.nlist)
    want_scores, want = reference.search(x[::50], 10, params=params)
    got_scores, got = fresh.index.search(x[::50], 10, params=params)
    assert np.array_equal(got, want) and np.allclose(got_scores, want_scores)
    assert np.array_equal(fresh.index.reconstruct_batch(ids[::7]), reference.reconstruct_batch(ids[::7]))
    assert fresh.calibrated_recall >= 0.9 and 1 <= fresh.default_nprobe <= fresh.nlist


def test_searches_running_while_an_exact_index_moves_find_every_face(monkeypatch):
    """A piece moves under the segment's write lock: a search never sees a face in neither
    side (missed) nor in both (returned twice)."""
    monkeypatch.setattr(flat_move, "PIECE", 200)
    old, ids, x, source = exact(20_000, seed=4)
    monkeypatch.setattr(vectors, "nlist_for", lambda n: 64)
    fresh, calibration = IvfIndex.trained_empty(old.dim, source, nprobe=64, family="ivf", seed=7)
    assert calibration is None and fresh.nlist == 64  # every list searched: the new side answers exactly
    segment = Segment(1, "enrolled", old.dim, IndexSettings(kind="ivf", nprobe=64), old)
    failures, searched = searched_while(segment, x, ids, lambda: move_onto(segment, fresh, None, source.vectors_of, target_recall=0.95,
                                                                       keeps=False, stop=lambda: False, current=lambda: True))
    assert segment.index is fresh and not failures and searched >= 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_exact_collection_made_ivf_never_holds_its_faces_twice(tmp_path, embedder, monkeypatch):
    """Issue 23: an exact index became an IVF built beside it, every face held twice (1.94-1.97x
    the steady memory building the IVF of the scale bench's 1M-face exact index). 120,000 faces
    (240 MB of vectors) of an exact collection made IVF through the upkeep now take at most
    three tenths of the vectors' size above where they began (51-61 MB over eight runs here): the
    new lists' room to grow (a sixteenth of what they hold, ivf_growth.py), a list's old buffer
    and its copy as it grows, the training sample (2,048 faces), the id map of the new lists,
    the snapshot after (sealed 1 MB at a time here). Failed before: 449,888 KB above the
    start (the IVF built beside the exact index)."""
    from facebank.index import snapshot
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    monkeypatch.setattr(vectors, "nlist_for", lambda n: 32)
    monkeypatch.setattr(snapshot, "CHUNK", 2**20)
    engine = Engine(make_config(tmp_path / "data", background=False), embedder=embedder)
    try:
        engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_FLAT)))
        synthetic_faces(engine, "big", 120_000, identity="crowd")
        engine.maintenance.clean_now()
        cid = engine.store.collection("big").id
        segment = engine.store.segments.get(cid, "enrolled")
        assert type(segment.index) is FlatIndex and len(segment.index) == 120_000
        before = np.sort(segment.index.ids())
        codes_kb = 120_000 * 512 * 4 // 1024
        engine.collections.update_collection(pb.UpdateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF, nprobe=8)))
        with anonymous_peak() as memory:
            engine.maintenance.clean_now()
        segment = engine.store.segments.get(cid, "enrolled")
        assert type(segment.index) is IvfIndex and segment.index.nlist == 32 and np.array_equal(np.sort(segment.index.ids()), before)
        grown = memory["grown"]
        assert grown < 0.3 * codes_kb, f"the move took {grown} KB above the {codes_kb} KB of vectors it holds"
    finally:
        engine.close()


def test_a_server_stopped_while_an_exact_index_moves_restarts_from_its_snapshot_and_moves_it_again(tmp_path, embedder, monkeypatch):
    """Half the pieces moved when the server stops: it stops at once (the move is left, never
    snapshotted), the next start loads the exact index's snapshot with what was enrolled
    meanwhile replayed, and makes it IVF again. Searches and enrollments went on during the move."""
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    monkeypatch.setattr(flat_move, "PIECE", 50)
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_FLAT)))
    synthetic_faces(engine, "big", 400)
    engine.maintenance.clean_now()
    cid = engine.store.collection("big").id
    people, probes = synthetic_vectors(400), list(range(0, 400, 40))
    monkeypatch.setenv("FACEBANK_DELAY_AT", "rebuild:moving=60")
    engine.collections.update_collection(pb.UpdateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF)))
    deadline = time.monotonic() + 30
    while not (isinstance(index := engine.store.segments.get(cid, "enrolled").index, MovingFlat) and index.left <= 4):
        assert time.monotonic() < deadline, "the exact index did not start moving"
        time.sleep(0.05)
    found = engine.store.search("big", people[probes], 1)
    assert [hits[0].identity.external_id for hits in found] == [f"synthetic-{i}" for i in probes]
    synthetic_faces(engine, "big", 1, identity="newcomer", seed=7)
    started = time.monotonic()
    engine.close()
    assert time.monotonic() - started < 10, "the stop waited for the move"
    monkeypatch.delenv("FACEBANK_DELAY_AT")
    restarted = Engine(make_config(tmp_path / "data", background=False), embedder=embedder)
    try:
        segment = restarted.store.segments.get(cid, "enrolled")
        assert segment.snapshot_seq > 0 and type(segment.index) is FlatIndex and len(segment.index) == 401
        restarted.maintenance.clean_now()
        segment = restarted.store.segments.get(cid, "enrolled")
        assert type(segment.index) is IvfIndex and len(segment.index) == 401
        found = restarted.store.search("big", people[probes], 1)
        assert [hits[0].identity.external_id for hits in found] == [f"synthetic-{i}" for i in probes]
    finally:
        restarted.close()


def test_a_move_of_an_exact_index_that_fails_midway_keeps_serving_and_the_next_rebuild_replaces_it(tmp_path, embedder, monkeypatch):
    """An error between two pieces (here: made) leaves the half-moved index serving every face,
    marked for a rebuild, which builds the IVF again from the catalog."""
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    monkeypatch.setattr(flat_move, "PIECE", 50)
    engine = Engine(make_config(tmp_path / "data", background=False), embedder=embedder)
    try:
        engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_FLAT)))
        synthetic_faces(engine, "big", 400)
        engine.maintenance.clean_now()
        cid = engine.store.collection("big").id
        every = np.sort(engine.store.segments.get(cid, "enrolled").index.ids())
        moved, real_move = [0], MovingFlat.move_next

        def failing_move(self):
            moved[0] += 1
            if moved[0] == 3:
                raise MemoryError("made to fail")
            return real_move(self)

        monkeypatch.setattr(MovingFlat, "move_next", failing_move)
        engine.collections.update_collection(pb.UpdateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF)))
        with pytest.raises(MemoryError):
            engine.maintenance.clean_now()
        segment = engine.store.segments.get(cid, "enrolled")
        assert isinstance(segment.index, MovingFlat) and segment.retrain_pending and len(segment.index.new) == 100
        assert np.array_equal(np.sort(segment.index.ids()), every)
        people, probes = synthetic_vectors(400), list(range(0, 400, 50))
        found = engine.store.search("big", people[probes], 1)
        assert [hits[0].identity.external_id for hits in found] == [f"synthetic-{i}" for i in probes]
        monkeypatch.setattr(MovingFlat, "move_next", real_move)
        engine.maintenance.clean_now()
        segment = engine.store.segments.get(cid, "enrolled")
        assert type(segment.index) is IvfIndex and not segment.retrain_pending
        assert np.array_equal(np.sort(segment.index.ids()), every)
        found = engine.store.search("big", people[probes], 1)
        assert [hits[0].identity.external_id for hits in found] == [f"synthetic-{i}" for i in probes]
    finally:
        engine.close()
