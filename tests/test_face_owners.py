"""The face owner map fills after the start: searches answer meanwhile, and no commit made
while it loads is undone by a batch read before it."""

from types import SimpleNamespace

import numpy as np
from conftest import open_store, synthetic_faces

from facebank.index.face_owners import UNKNOWN, FaceOwners
from facebank.index.faults import DELAY_ENV
from facebank.index.forget import forget_identity
from facebank.index.identities import delete_face, enroll, identity, identity_vectors
from facebank.index.records import IndexSettings

N = 300


def _gallery(path) -> dict[str, np.ndarray]:
    store = open_store(path)
    try:
        store.create_collection("default", "scrfd500m-w600kmbf", 512, 0.4, IndexSettings())
        synthetic_faces(SimpleNamespace(store=store), "default", N)
        store.maintenance.clean_now()
        return {f"synthetic-{i}": identity_vectors(store, "default", f"synthetic-{i}")[1][0] for i in range(N)}
    finally:
        store.close()


def _top(store, vectors: np.ndarray) -> list[str]:
    return [row[0].identity.external_id if len(row) else "" for row in store.search("default", vectors, 1)]


def test_a_start_answers_before_the_owner_map_is_loaded_and_the_load_undoes_no_commit(tmp_path, monkeypatch):
    data = tmp_path / "data"
    vectors = _gallery(data)
    names = [f"synthetic-{i}" for i in range(N)]
    monkeypatch.setenv(DELAY_ENV, "owners:batch-read=15")   # the first batch is read, then held 15 s
    store = open_store(data)
    try:
        assert store.owners.loading
        everyone = np.stack([vectors[name] for name in names])
        assert _top(store, everyone) == names                     # from the catalog, face by face
        deleted = identity(store, "default", "synthetic-1")[1][0]
        delete_face(store, "default", deleted.face_id)
        forgotten = identity(store, "default", "synthetic-2")[1][0]
        forget_identity(store, store.maintenance, "default", "synthetic-2")
        late_vector = np.random.default_rng(9).standard_normal(512).astype(np.float32)
        late_vector /= np.linalg.norm(late_vector)
        late = enroll(store, "default", "late", "", {}, [_face(late_vector)])[1][0].face
        store.uow.drain()
        kept = identity(store, "default", "synthetic-3")[1][0]
        assert store.owners.loading, "the commits above must land while the batch read before them is held"
        assert list(store.owners.faces_of({kept.iid})) == [kept.face_id]   # from the catalog while loading
        assert store.owners.loaded.wait(60)
        # The held batch still said synthetic-1 and synthetic-2 owned their faces: it must not say so now.
        owners = store.owners.lookup(np.array([deleted.face_id, forgotten.face_id, late.face_id, kept.face_id, 10**6]))
        assert owners.tolist() == [-1, -1, late.iid, kept.iid, -1]
        assert list(store.owners.faces_of({kept.iid, late.iid})) == sorted([kept.face_id, late.face_id])
        answers = _top(store, np.stack([vectors[n] for n in names[3:]] + [late_vector]))
        assert answers == names[3:] + ["late"]
        gone = _top(store, np.stack([vectors["synthetic-1"], vectors["synthetic-2"]]))
        assert "synthetic-1" not in gone and "synthetic-2" not in gone
    finally:
        store.close()


def test_a_closing_store_leaves_the_load_at_once(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _gallery(data)
    monkeypatch.setenv(DELAY_ENV, "owners:batch-read=600")
    store = open_store(data)
    assert store.owners.loading
    store.close()   # the loader is stopped before the catalog closes (it would read a closed map)
    assert store.owners.loading and not store._owner_loader._thread.is_alive()


def test_the_map_answers_unknown_faces_from_its_reader():
    owners = FaceOwners()
    asked = []

    def read(ids):
        asked.append(ids.tolist())
        return np.where(ids == 7, 70, -1)

    owners.begin_loading(read, lambda iids: np.zeros(0, np.int64))
    owners.update({5: 50})
    assert owners.lookup(np.array([5, 7, 9, -1, 5000])).tolist() == [50, 70, -1, -1, -1]
    assert asked == [[7, 9, 5000]]                              # -1 is "no result", never asked
    owners.load_batch(np.array([5, 7]), np.array([1, 71]), upto=9)
    assert owners.lookup(np.array([5, 7])).tolist() == [50, 71]   # the commit is newer than the batch
    owners.finish_loading()
    assert owners.lookup(np.array([8, 9, 5000])).tolist() == [-1, -1, -1] and len(asked) == 1
    assert UNKNOWN not in owners._owner


def _face(vector):
    from facebank.index.sealed_faces import NewFace

    return NewFace([0, 0, 1, 1], [[0, 0]] * 5, 0.9, {}, vector, "f" * 64, "", "scrfd500m-w600kmbf")
