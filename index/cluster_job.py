"""A clustering pass over a collection.

Incremental (the default): only faces waiting since the last pass are
processed. Each first tries to join an existing cluster or identity (its
neighbours in the live indexes, which already hold every settled face), and
the rest are clustered among themselves. Settled faces are never re-processed.

Full: every face of unnamed, unedited clusters is clustered again; new
clusters take the id of the old cluster they mostly agree with, so ids stay
stable, and named or edited clusters (and therefore names) are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from facebank.index.cluster_records import new_cluster, refresh_cluster
from facebank.index.cluster_store import ClusterState, ClusterWriter, read_state
from facebank.index.clustering import ClusteringParams, assign, cluster, knn, match_clusters, quality_weight
from facebank.index.records import ENROLLED, INGESTED
from facebank.index.store import FaceStore


@dataclass
class Summary:
    clusters: int = 0
    new_clusters: int = 0
    assigned: int = 0
    unclustered: int = 0
    cannot_link_splits: int = 0


Progress = tuple[str, int, int]  # stage, done, total


def run_pass(store: FaceStore, cid: int, params: ClusteringParams, *, full: bool = False) -> Iterator[Progress | Summary]:
    """Yields progress tuples, then the Summary."""
    with store.job_lock(cid):  # one pass per collection at a time
        state = read_state(store, cid)
        summary = Summary()
        old: dict[int, set[int]] = {}
        todo = list(state.waiting)
        if full:
            for c in state.clusters.values():
                if not c.iid and not c.locked:
                    old[c.cluster_id] = set(state.members.get(c.cluster_id, []))
                    todo.extend(old[c.cluster_id])
        todo = sorted(set(todo))
        yield ("assign", 0, len(todo))
        joined = _assign(store, cid, state, todo, params, exclude=set(todo)) if todo else {}
        summary.assigned = len(joined)
        yield ("assign", len(todo), len(todo))

        rest = [f for f in todo if f not in joined]
        yield ("graph", 0, len(rest))
        ids, vectors = store.vectors_of(rest)
        sims, nbrs = knn(vectors, params.k, device=store.segments.factory.device) if len(ids) else (np.zeros((0, 0)), np.zeros((0, 0), np.int64))
        yield ("graph", len(rest), len(rest))

        yield ("cluster", 0, len(ids))
        records = state.faces(ids.tolist())
        weights = np.asarray([quality_weight(records[f].quality) for f in ids.tolist()])
        labels, summary.cannot_link_splits = cluster(sims, nbrs, state.photos_of(ids.tolist()), weights, params) if len(ids) else (np.zeros(0, np.int64), 0)
        groups = {int(lab): {int(f) for f in ids[labels == lab]} for lab in np.unique(labels[labels >= 0])}
        reuse = match_clusters(old, groups) if full else {}
        yield ("cluster", len(ids), len(ids))

        yield ("save", 0, len(todo))
        _save(store, cid, todo, joined, groups, reuse, old)
        summary.new_clusters = len(groups) - len(reuse)
        summary.unclustered = len(ids) - int((labels >= 0).sum())
        with store.read() as t:
            summary.clusters = t.count_clusters(cid)
        yield ("save", len(todo), len(todo))
        yield summary


def _assign(store: FaceStore, cid: int, state: ClusterState, todo: list[int], params: ClusteringParams, exclude: set[int]) -> dict[int, int]:
    """face -> cluster id for the faces that confidently join an existing cluster
    (an identity that has no cluster yet is the target -iid)."""
    with store.read() as t:
        enrolled = t.count_segment(cid, ENROLLED)
    if not state.members and not enrolled:  # nothing settled to join: the first pass of a collection
        return {}
    ids, vectors = store.vectors_of(todo)
    results = [store.segment(cid, seg).search(vectors, params.k) for seg in (ENROLLED, INGESTED)]
    sims = np.concatenate([r[0] for r in results], axis=1)
    nbrs = np.concatenate([r[1] for r in results], axis=1)
    # Each neighbour's target: its cluster, else its identity (-iid), else none (-0 = 0 is "none" below).
    cluster_of = {fid: c for c, faces in state.members.items() for fid in faces}
    owners = store.owners.lookup(nbrs)
    target_of: dict[int, int] = {}
    for fid, owner in zip(nbrs.ravel().tolist(), owners.ravel().tolist()):
        if fid < 0 or fid in exclude or fid in target_of or owner < 0:
            continue
        if fid in cluster_of:
            target_of[fid] = cluster_of[fid]
        elif owner > 0:
            target_of[fid] = state.identity_clusters.get(owner, -owner)
    if not target_of:
        return {}
    dense: dict[int, int] = {}
    targets = np.full(nbrs.shape, -1, np.int64)
    for (i, j), fid in np.ndenumerate(nbrs):
        if fid in target_of:
            targets[i, j] = dense.setdefault(target_of[fid], len(dense))
    sizes = {dense[t]: _target_size(store, state, t) for t in dense}
    back = {v: k for k, v in dense.items()}
    photos: dict[int, set[str]] = {}
    joined: dict[int, int] = {}
    todo_faces = state.faces(ids.tolist())
    for fid, chosen in zip(ids.tolist(), assign(sims, targets, params, sizes).tolist()):
        if chosen < 0:
            continue
        target = back[chosen]
        if target not in photos:  # cannot-link: the photos this person is already in
            photos[target] = {f.image_sha256 for f in state.faces(_target_faces(store, state, target)).values()}
        photo = todo_faces[fid].image_sha256
        if photo in photos[target]:
            continue
        photos[target].add(photo)
        joined[fid] = target
    return joined


def _target_faces(store: FaceStore, state: ClusterState, target: int) -> list[int]:
    if target > 0:
        return state.members.get(target, [])
    with store.read() as t:
        return t.identity_face_ids(-target)


def _target_size(store: FaceStore, state: ClusterState, target: int) -> int:
    if target > 0:
        return len(state.members.get(target, []))
    with store.read() as t:
        rec = t.get_identity_by_iid(-target)
    return rec.face_count if rec else 0


def _save(store: FaceStore, cid: int, todo: list[int], joined: dict[int, int], groups: dict[int, set[int]], reuse: dict[int, int], old: dict[int, set[int]]) -> None:
    """Put every processed face where the pass decided: a cluster, or back to waiting."""

    def edit(t, w: ClusterWriter):
        destination: dict[int, int] = {}
        for label, faces in groups.items():
            target = reuse.get(label) or new_cluster(t, cid).cluster_id
            destination.update({f: target for f in faces})
        identity_clusters: dict[int, int] = {}
        for fid, target in joined.items():
            if target < 0:
                iid = -target
                if iid not in identity_clusters:
                    identity_clusters[iid] = _cluster_for_identity(t, w, cid, iid)
                target = identity_clusters[iid]
            destination[fid] = target
        touched: set[int] = set()
        for fid in todo:
            face = t.get_face(fid)
            if face is None:  # deleted or forgotten during the pass
                continue
            target = destination.get(fid, 0)
            cluster = t.get_cluster(cid, target) if target else None
            if target and cluster is None:
                target = 0
            iid = cluster.iid if cluster else 0
            touched.update((face.cluster_id, target))
            if face.cluster_id != target or face.iid != iid:
                w.move(t, face, iid, target)
        for old_id in old:
            if old_id not in reuse.values():
                for fid in t.cluster_face_ids(old_id):
                    w.move(t, t.get_face(fid), 0, 0)
                t.delete_cluster(cid, old_id)
        for cluster_id in touched - {0}:
            refresh_cluster(t, cid, cluster_id)

    ClusterWriter(store, cid).run(edit)


def _cluster_for_identity(t, w: ClusterWriter, cid: int, iid: int) -> int:
    """An enrolled identity gets a cluster (named, holding all its faces) when a face first joins it."""
    identity = t.get_identity_by_iid(iid)
    if identity is None:  # forgotten during the pass
        return 0
    if identity.cluster_id and t.get_cluster(cid, identity.cluster_id):
        return identity.cluster_id
    rec = new_cluster(t, cid, iid=iid, locked=True)
    previous = type(identity)(**vars(identity))
    identity.cluster_id = rec.cluster_id
    t.put_identity(identity, previous)
    for fid in t.identity_face_ids(iid):
        w.move(t, t.get_face(fid), iid, rec.cluster_id)
    refresh_cluster(t, cid, rec.cluster_id)
    return rec.cluster_id
