"""Clusters in the catalog: reading the state a clustering pass needs, saving
its result, and the edits a person makes (merge, split, name).

A cluster linked to an identity (named) holds that identity's faces: they are
enrolled (searchable) and sealed under the identity's data key. Faces of an
unnamed cluster, or of none, are ingested and each sealed under its own key.
Moving a face between the two re-seals it and shreds the key it leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facebank.errors import FailedPrecondition, InvalidArgument, NotFound
from facebank.index.cluster_records import check_cannot_link, get_cluster, new_cluster, refresh_cluster
from facebank.index.keyring import face_owner, identity_owner
from facebank.index.records import ClusterRecord, FaceRecord, IdentityRecord
from facebank.index.sealed_faces import now_ms, open_crop, open_embedding, open_staged, seal_crop, seal_embedding, seal_staged
from facebank.index.store import FaceStore
from facebank.index.unit_of_work import WriteTxn

__all__ = ["ClusterState", "ClusterWriter", "cluster_listing", "cluster_view", "merge", "move_faces", "name", "new_cluster", "read_state", "refresh_cluster", "split"]


@dataclass
class ClusterState:
    """What a clustering pass needs to know about a collection. Settled faces are
    known by key-only scans (their cluster) and the owners view (their identity);
    face records are decoded only for the faces a pass works on (`face`)."""

    store: FaceStore
    clusters: dict[int, ClusterRecord]
    members: dict[int, list[int]]              # cluster id -> its faces
    waiting: list[int]                         # ingested faces in no cluster
    identity_clusters: dict[int, int] = field(default_factory=dict)  # iid -> its cluster
    _faces: dict[int, FaceRecord | None] = field(default_factory=dict)

    def faces(self, face_ids) -> dict[int, FaceRecord]:
        """Records of these faces (those that exist), read once per pass."""
        missing = [f for f in face_ids if f not in self._faces]
        if missing:
            with self.store.read(tolerant=True) as t:
                self._faces.update({f: t.get_face(f) for f in missing})
        return {f: rec for f in face_ids if (rec := self._faces.get(f)) is not None}

    def face(self, face_id: int) -> FaceRecord | None:
        return self.faces([face_id]).get(face_id)

    def photos_of(self, face_ids: list[int]) -> np.ndarray:
        """An integer per face naming its photo: faces of one photo cannot link."""
        records = self.faces(face_ids)
        codes: dict[str, int] = {}
        return np.asarray([codes.setdefault(records[f].image_sha256, len(codes)) for f in face_ids], np.int64)


def read_state(store: FaceStore, cid: int) -> ClusterState:
    with store.read(tolerant=True) as t:
        clusters = {c.cluster_id: c for c in t.iter_clusters(cid)}
        members = {cluster_id: t.cluster_face_ids(cluster_id) for cluster_id in clusters}
        waiting = t.unclustered_face_ids(cid)
    identity_clusters = {c.iid: c.cluster_id for c in clusters.values() if c.iid}
    alive = store.owners.lookup(np.asarray(waiting, np.int64)) == 0 if waiting else np.zeros(0, bool)
    return ClusterState(store, clusters, members, [f for f, ok in zip(waiting, alive.tolist()) if ok], identity_clusters)


def cluster_listing(store: FaceStore, cid: int, include_faces: bool, unclustered_only: bool = False):
    """Every cluster, largest first, as (record, identity id, faces) with the
    identity ids of named ones; and the faces waiting in no cluster (only those
    when `unclustered_only`)."""
    state = read_state(store, cid)
    if unclustered_only:
        records = state.faces(state.waiting)
        return [], [records[f] for f in state.waiting if f in records]
    member_ids = [f for faces in state.members.values() for f in faces] if include_faces else []
    records = state.faces(member_ids + (state.waiting if include_faces else []))
    with store.read(tolerant=True) as t:
        iids = {c.iid for c in state.clusters.values() if c.iid}
        names = {iid: rec.external_id for iid in iids if (rec := t.get_identity_by_iid(iid))}
    clusters = []
    for rec in sorted(state.clusters.values(), key=lambda c: (-c.size, c.cluster_id)):
        faces = [records[f] for f in state.members.get(rec.cluster_id, []) if f in records] if include_faces else []
        clusters.append((rec, names.get(rec.iid, ""), faces))
    return clusters, [records[f] for f in state.waiting if f in records]


def cluster_view(store: FaceStore, cid: int, cluster_id: int):
    """(record, identity id or "", its faces)."""
    with store.read() as t:
        rec = get_cluster(t, cid, cluster_id)
        identity = t.get_identity_by_iid(rec.iid) if rec.iid else None
        faces = [f for f in (t.get_face(fid) for fid in t.cluster_face_ids(rec.cluster_id)) if f is not None]
    return rec, identity.external_id if identity else "", faces


class ClusterWriter:
    """Cluster edits in one unit of work: faces re-sealed for their new owner, the
    indexes told of every move, keys a face leaves shredded after the commit."""

    def __init__(self, store: FaceStore, cid: int) -> None:
        self.store = store
        self.cid = cid

    def run(self, edit) -> object:
        """Run `edit(w, writer)` in one unit of work."""
        with self.store.write() as w:
            return edit(w, self)

    def move(self, w: WriteTxn, face: FaceRecord, iid: int, cluster_id: int) -> FaceRecord:
        """Put a face in a cluster and, if the owner changes, re-seal it for the new owner."""
        updated = FaceRecord(**vars(face))
        updated.cluster_id = cluster_id
        if iid != face.iid:
            vector = open_embedding(self.store.keyring, w.t, face.face_id)
            if iid:
                key = w.open_key(w.get_identity_by_iid(iid).key_slot, identity_owner(iid))
            else:
                key = w.allocate_keys([face_owner(face.face_id)])[0]
            if not face.iid:
                w.shred_after_commit.append(face.key_slot)
                w.delete_slot_owner(face.key_slot)
            updated.iid, updated.key_slot = iid, key.slot
            seal_embedding(w, face.face_id, iid, key, vector)
            crop = open_crop(self.store.keyring, w.t, face.face_id)
            if crop is not None:
                seal_crop(w, face.face_id, iid, key, crop)
            staged = open_staged(self.store.keyring, w.t, face.face_id)  # a migration in progress
            if staged is not None:
                seal_staged(w, face.face_id, iid, key, staged)
            w.index_remove(self.cid, face.segment, [face.face_id])
            w.index_add(self.cid, updated.segment, face.face_id, vector)
            for old_or_new, delta in ((face.iid, -1), (iid, +1)):
                if old_or_new:
                    rec = w.get_identity_by_iid(old_or_new)
                    rec.face_count += delta
                    w.put_identity(rec, rec)
            # The photo's ingest record (iid 0) stays: it says the photo was ingested.
            if face.iid:
                left = [f for f in w.get_image_faces(self.cid, face.image_sha256, face.iid) or [] if f != face.face_id]
                w.put_image_faces(self.cid, face.image_sha256, face.iid, left)
            if iid:
                joined = w.get_image_faces(self.cid, face.image_sha256, iid) or []
                w.put_image_faces(self.cid, face.image_sha256, iid, joined + [face.face_id])
        w.put_face(updated, face)
        w.mark_unclustered(self.cid, face.face_id, cluster_id == 0 and iid == 0)
        return updated


def merge(store: FaceStore, cid: int, into: int, others: list[int]) -> ClusterRecord:
    def edit(t: WriteTxn, w: ClusterWriter):
        target = get_cluster(t, cid, into)
        sources = [get_cluster(t, cid, o) for o in others if o != into]
        named = {c.iid for c in sources if c.iid} - {target.iid}
        if named:
            raise FailedPrecondition(
                f"cluster {into} cannot absorb a cluster named for another identity; merge into that named cluster instead"
            )
        members = t.cluster_face_ids(into) + [f for c in sources for f in t.cluster_face_ids(c.cluster_id)]
        check_cannot_link(t, members)
        for c in sources:
            for fid in t.cluster_face_ids(c.cluster_id):
                w.move(t, t.get_face(fid), target.iid, target.cluster_id)
            t.delete_cluster(cid, c.cluster_id)
        target.locked = True
        t.put_cluster(target)
        refresh_cluster(t, cid, into)
        return t.get_cluster(cid, into)

    return ClusterWriter(store, cid).run(edit)


def split(store: FaceStore, cid: int, cluster_id: int, face_ids: list[int]) -> ClusterRecord:
    def edit(t: WriteTxn, w: ClusterWriter):
        source = get_cluster(t, cid, cluster_id)
        members = set(t.cluster_face_ids(cluster_id))
        if not face_ids:
            raise InvalidArgument("name the faces to split off (face_ids)")
        strangers = [f for f in face_ids if f not in members]
        if strangers:
            raise InvalidArgument(f"faces {strangers} are not in cluster {cluster_id}")
        fresh = new_cluster(t, cid, locked=True)
        for fid in face_ids:
            w.move(t, t.get_face(fid), 0, fresh.cluster_id)
        source.locked = True
        t.put_cluster(source)
        refresh_cluster(t, cid, cluster_id)
        refresh_cluster(t, cid, fresh.cluster_id)
        return t.get_cluster(cid, fresh.cluster_id)

    return ClusterWriter(store, cid).run(edit)


def move_faces(store: FaceStore, cid: int, into: int, face_ids: list[int]) -> ClusterRecord:
    """Faces from any cluster (or none) join cluster `into` and its identity, if it is named;
    the clusters they leave keep their other faces. Every cluster touched is locked
    (edited by a person: re-clustering keeps it as it is)."""

    def edit(t: WriteTxn, w: ClusterWriter):
        target = get_cluster(t, cid, into)
        if not face_ids:
            raise InvalidArgument("name the faces to move (face_ids)")
        faces = []
        for fid in dict.fromkeys(face_ids):
            face = t.get_face(fid)
            if face is None or face.collection_id != cid:
                raise NotFound(f"face {fid} does not exist in this collection")
            faces.append(face)
        members = t.cluster_face_ids(into)
        check_cannot_link(t, members + [f.face_id for f in faces if f.face_id not in members])
        left = {f.cluster_id for f in faces if f.cluster_id and f.cluster_id != into}
        for face in faces:
            if face.cluster_id != into or face.iid != target.iid:
                w.move(t, face, target.iid, into)
        for cluster_id in left:
            source = t.get_cluster(cid, cluster_id)
            source.locked = True
            t.put_cluster(source)
            refresh_cluster(t, cid, cluster_id)
        target.locked = True
        t.put_cluster(target)
        refresh_cluster(t, cid, into)
        return t.get_cluster(cid, into)

    return ClusterWriter(store, cid).run(edit)


def name(store: FaceStore, cid: int, cluster_id: int, external_id: str, display_name: str) -> IdentityRecord:
    """Turn a cluster into an identity (new or existing): its faces become enrolled."""

    def edit(t: WriteTxn, w: ClusterWriter):
        cluster = get_cluster(t, cid, cluster_id)
        identity = t.get_identity(cid, external_id)
        if identity is None:
            iid = t.next_id("identity")
            key = t.allocate_keys([identity_owner(iid)])[0]
            identity = IdentityRecord(iid, cid, external_id, display_name or external_id, {}, key.slot, now_ms())
            t.put_identity(identity)
        elif display_name:
            previous = IdentityRecord(**vars(identity))
            identity.display_name = display_name
            t.put_identity(identity, previous)
        if cluster.iid and cluster.iid != identity.iid:
            raise FailedPrecondition(f"cluster {cluster_id} is already named {t.get_identity_by_iid(cluster.iid).external_id!r}")
        other = identity.cluster_id and identity.cluster_id != cluster_id and t.get_cluster(cid, identity.cluster_id)
        members = t.cluster_face_ids(cluster_id)
        if other:  # the identity already has a cluster: this one joins it
            check_cannot_link(t, members + t.cluster_face_ids(other.cluster_id))
            target = other
        else:
            check_cannot_link(t, members + [f for f in t.identity_face_ids(identity.iid) if f not in members])
            target = cluster
        for fid in members + [f for f in t.identity_face_ids(identity.iid)]:
            face = t.get_face(fid)
            if face.cluster_id != target.cluster_id or face.iid != identity.iid:
                w.move(t, face, identity.iid, target.cluster_id)
        if target is not cluster:
            t.delete_cluster(cid, cluster_id)
        target.iid = identity.iid
        target.locked = True
        t.put_cluster(target)
        refresh_cluster(t, cid, target.cluster_id)
        fresh = t.get_identity_by_iid(identity.iid)
        previous = IdentityRecord(**vars(fresh))
        fresh.cluster_id = target.cluster_id
        t.put_identity(fresh, previous)
        return fresh

    return ClusterWriter(store, cid).run(edit)
