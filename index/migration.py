"""Moving a collection to another model without losing a name.

Every face is re-embedded from its sealed crop by the new model. The new
vectors are staged beside the live ones (`staged_embeddings`, sealed under the
same data key as the face's live embedding, so a forget during the migration
shreds them too, and cluster edits re-seal them), a batch at a time, each batch
committed with the migration's cursor: a migration killed at any point resumes
where it stopped. Searches use the old model and its index until the end, when
one unit of work puts the staged vectors in place of the live ones, sets the
collection's model, size and threshold, and swaps in indexes built beside the
old ones from the staged vectors. Identities, names, metadata, cluster
memberships and every id stay as they were.

The model is passed in (`embed`: encoded crops -> unit vectors), so this module
knows nothing of how a model runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np

from facebank.errors import FailedPrecondition, InvalidArgument, Reason
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.faults import crash_point
from facebank.index.keyring import KeyShredded
from facebank.index.records import CollectionRecord
from facebank.index.sealed_faces import open_crop, open_vectors, owner_tag, seal_staged
from facebank.index.segments import SEGMENTS
from facebank.index.store import FaceStore
from facebank.index.vector_source import VectorSource

log = logging.getLogger(__name__)

Embed = Callable[[list[bytes]], np.ndarray]   # encoded crops -> (n, dim) unit vectors
BATCH = 64
CATCH_UP_ROUNDS = 5


@dataclass
class Target:
    model: str        # how the server loads it: a shipped model's name, or a spec file
    model_id: str
    dim: int
    threshold: float  # the new model's default open-set threshold (a score of one model means nothing to another)


@dataclass
class MigrationState:
    target: Target
    cursor: int = 0        # every face up to this id was staged (or had gone)
    staged: int = 0
    started_ms: int = 0


@dataclass
class Plan:
    faces: int
    without_crops: list[int]   # faces that cannot be re-embedded (no crop kept)
    staged: int                # already staged by an earlier, interrupted run
    resumes: bool


@dataclass
class Progress:
    stage: str    # embed | switch | done
    done: int
    total: int


def _meta_key(cid: int) -> str:
    return f"migration:{cid}"


def state_of(t: CatalogTxn, cid: int) -> MigrationState | None:
    raw = t.get_meta(_meta_key(cid))
    if raw is None:
        return None
    return MigrationState(target=Target(**raw["target"]), cursor=raw["cursor"], staged=raw["staged"], started_ms=raw["started_ms"])


def _put_state(t: CatalogTxn, cid: int, state: MigrationState) -> None:
    t.put_meta(_meta_key(cid), asdict(state))


def _face_ids(t: CatalogTxn, cid: int) -> list[int]:
    return sorted(fid for segment in SEGMENTS for fid in t.segment_face_ids(cid, segment))


def plan(store: FaceStore, collection: str, target: Target) -> Plan:
    """What a migration of `collection` to `target` has to do (nothing is written)."""
    with store.read() as t:
        coll = store.collection(collection, t)
        _check_target(coll, target)
        ids = _face_ids(t, coll.id)
        missing = [fid for fid in ids if t.get_crop(fid) is None]
        state = state_of(t, coll.id)
        resumes = state is not None and state.target == target
        staged = sum(1 for _ in t.iter_embeddings(ids, "staged_embeddings")) if resumes else 0
    return Plan(len(ids), missing, staged, resumes)


def sample_crops(store: FaceStore, collection: str, n: int) -> list[bytes]:
    """Up to n of the collection's kept crops (to time the new model on)."""
    out = []
    with store.read() as t:
        coll = store.collection(collection, t)
        for fid in _face_ids(t, coll.id):
            try:
                crop = open_crop(store.keyring, t, fid)
            except KeyShredded:
                continue
            if crop is not None:
                out.append(crop)
            if len(out) >= n:
                break
    return out


def _check_target(coll: CollectionRecord, target: Target) -> None:
    if target.model_id == coll.model_id:
        raise FailedPrecondition(f"collection {coll.name!r} already holds embeddings of {coll.model_id!r}; nothing to migrate",
                                 reason=Reason.BAD_OPTION)
    if target.dim <= 0:
        raise InvalidArgument(f"model {target.model!r} gives no embedding size", reason=Reason.BAD_OPTION)


def migrate(store: FaceStore, collection: str, target: Target, embed: Embed, *, batch: int = BATCH) -> Iterator[Progress]:
    """Re-embed every face, then switch; yields progress. One migration per collection at a
    time (the collection's job lock, which clustering passes take too)."""
    coll = store.collection(collection)
    lock = store.job_lock(coll.id)
    if not lock.acquire(blocking=False):
        raise FailedPrecondition(f"collection {collection!r} is busy with another migration or clustering pass; try again when it ends")
    try:
        found = plan(store, collection, target)
        if found.without_crops:
            shown = ", ".join(map(str, found.without_crops[:20])) + (" ..." if len(found.without_crops) > 20 else "")
            raise FailedPrecondition(
                f"{len(found.without_crops)} of the {found.faces} faces of {collection!r} have no kept crop and cannot be re-embedded "
                f"(face ids {shown}); delete them, or enroll them again from their photos, then migrate",
                reason=Reason.NO_CROP)
        _begin(store, coll, target)
        yield from _stage_all(store, coll, target, embed, batch)
        yield Progress("switch", 0, 1)
        _switch(store, coll, target, embed, batch)
        yield Progress("done", 1, 1)
    finally:
        lock.release()


def abandon(store: FaceStore, collection: str) -> int:
    """Drop an unfinished migration's staged vectors and state; returns how many."""
    coll = store.collection(collection)
    with store.write() as w:
        ids = _face_ids(w.t, coll.id)
        gone = 0
        for fid in ids:
            if w.get_staged(fid) is not None:
                w.delete_staged(fid)
                gone += 1
        w.delete_meta(_meta_key(coll.id))
    return gone


def _begin(store: FaceStore, coll: CollectionRecord, target: Target) -> None:
    with store.write() as w:
        state = state_of(w.t, coll.id)
        if state is not None and state.target == target:
            log.info("migration of %s to %s resumes after face %d (%d staged)", coll.name, target.model_id, state.cursor, state.staged)
            return
        if state is not None:  # another target: its staged vectors are of no use
            for fid in _face_ids(w.t, coll.id):
                w.delete_staged(fid)
        _put_state(w.t, coll.id, MigrationState(target, started_ms=int(time.time() * 1000)))


def _stage_all(store: FaceStore, coll: CollectionRecord, target: Target, embed: Embed, batch: int) -> Iterator[Progress]:
    """The faces there when it starts, a batch at a time (those added later are caught up at the switch)."""
    with store.read() as t:
        state = state_of(t, coll.id)
        ids = _face_ids(t, coll.id)
    pending = [fid for fid in ids if fid > state.cursor]
    done, batches = state.staged, 0
    for start in range(0, len(pending), batch):
        todo = pending[start : start + batch]
        done += _stage(store, coll, embed, todo, cursor=todo[-1])
        batches += 1
        crash_point(f"migration:after-batch:{batches}")
        yield Progress("embed", min(done, len(ids)), len(ids))


def _stage(store: FaceStore, coll: CollectionRecord, embed: Embed, face_ids: list[int], cursor: int | None = None) -> int:
    """Embed the faces' crops (outside any write) and stage the vectors in one unit of work."""
    crops, ids = [], []
    with store.read() as t:
        for fid in face_ids:
            try:
                crop = open_crop(store.keyring, t, fid)
            except KeyShredded:  # being forgotten
                continue
            if crop is not None:
                crops.append(crop)
                ids.append(fid)
    vectors = embed(crops) if crops else np.zeros((0, 0), np.float32)
    staged = 0
    with store.write() as w:
        state = state_of(w.t, coll.id)
        if state is None:
            raise FailedPrecondition(f"the migration of {coll.name!r} was abandoned meanwhile")
        if len(vectors) and vectors.shape[1] != state.target.dim:
            raise InvalidArgument(f"model {state.target.model!r} gave {vectors.shape[1]} values per face, not {state.target.dim}")
        for fid, vector in zip(ids, vectors):
            face = w.get_face(fid)
            row = w.get_embedding(fid)
            if face is None or row is None:  # deleted or forgotten since the crop was read
                continue
            iid, slot, _ = row
            try:
                key = w.open_key(slot, owner_tag(iid, fid))
            except KeyShredded:
                continue
            seal_staged(w, fid, iid, key, vector)
            staged += 1
        if cursor is not None:
            state.cursor = max(state.cursor, cursor)
        state.staged += staged
        _put_state(w.t, coll.id, state)
    return staged


def _unstaged(t: CatalogTxn, cid: int) -> list[int]:
    ids = _face_ids(t, cid)
    have = {fid for fid, *_ in t.iter_embeddings(ids, "staged_embeddings")}
    return [fid for fid in ids if fid not in have]


def _switch(store: FaceStore, coll: CollectionRecord, target: Target, embed: Embed, batch: int) -> None:
    """Catch up with faces added or moved meanwhile, build the new indexes beside the old
    ones, then switch everything in one unit of work."""
    for _ in range(CATCH_UP_ROUNDS):
        with store.read() as t:
            late = _unstaged(t, coll.id)
        for start in range(0, len(late), batch):
            _stage(store, coll, embed, late[start : start + batch])
        with store.read() as t:
            cropless = [fid for fid in _unstaged(t, coll.id) if t.get_crop(fid) is None]
        if cropless:
            raise FailedPrecondition(f"faces {cropless[:20]} were added without a crop during the migration and cannot be re-embedded; "
                                     "delete them and run the migration again to finish it", reason=Reason.NO_CROP)
        fresh = _build_beside(store, coll, target)
        crash_point("migration:before-switch")
        switched = _commit_switch(store, coll, target, fresh)
        if switched:
            return
    raise FailedPrecondition(f"collection {coll.name!r} kept changing during the switch; run the migration again to finish it")


def _build_beside(store: FaceStore, coll: CollectionRecord, target: Target) -> dict:
    """New indexes from the staged vectors, searched by no one yet."""
    with store.read() as t:
        seq = t.last_seq()
        settings = t.get_collection_by_id(coll.id).index_settings
        faces = {segment: t.segment_face_ids(coll.id, segment) for segment in SEGMENTS}

    def staged(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with store.read() as t:
            return open_vectors(store.keyring, t, wanted, target.dim, table="staged_embeddings")

    return {segment: store.segments.build_from(coll.id, segment, target.dim, settings, VectorSource(ids, target.dim, staged), seq)
            for segment, ids in faces.items()}


def _commit_switch(store: FaceStore, coll: CollectionRecord, target: Target, fresh: dict) -> bool:
    with store.write() as w:
        store.uow.drain()  # nothing of the old model may reach the new indexes after the swap
        if _unstaged(w.t, coll.id):
            return False  # faces arrived after the catch-up: another round
        rec = w.get_collection_by_id(coll.id)
        for segment, new in fresh.items():
            live = w.segment_face_ids(coll.id, segment)
            built = set(new.index.ids().tolist())
            gone = np.asarray(sorted(built - set(live)), np.int64)
            added = [fid for fid in live if fid not in built]
            if len(gone) or added:  # changed after the indexes were built (forgets, new faces)
                ids, vectors = open_vectors(store.keyring, w.t, added, target.dim, table="staged_embeddings")
                new.apply(w.last_seq(), ids, vectors, gone)
            for fid in live:
                iid, slot, sealed = w.get_staged(fid)
                w.put_embedding(fid, iid, slot, sealed)
                w.delete_staged(fid)
                face = w.get_face(fid)
                if face is not None and face.model_id != target.model_id:
                    moved = type(face)(**{**vars(face), "model_id": target.model_id})
                    w.put_face(moved, face)
        rec.model_id, rec.dim, rec.threshold = target.model_id, target.dim, float(target.threshold)
        w.put_collection(rec)
        w.delete_meta(_meta_key(coll.id))
        w.refuse_older_snapshots(coll.id)  # a snapshot of the old model's index is of no use now

        def swap() -> None:
            for segment, new in fresh.items():
                old = store.segments.find(coll.id, segment)
                if old is not None:
                    new.changes_since_snapshot = 1
                    store.segments.replace(old, new)

        w.on_commit.append(swap)
    log.info("collection %s now holds embeddings of %s (%d-d)", coll.name, target.model_id, target.dim)
    return True
