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
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.clustering import quality_weight
from facebank.index.keyring import DataKey, face_owner, identity_owner
from facebank.index.records import ENROLLED, INGESTED, ClusterRecord, FaceRecord, IdentityRecord
from facebank.index.sealed_faces import now_ms, open_embedding, seal_embedding
from facebank.index.store import FaceStore

REPRESENTATIVES = 3


def refresh_cluster(t: CatalogTxn, cid: int, cluster_id: int) -> None:
    """Recount a cluster and choose its representatives; an empty unnamed one goes."""
    cluster = t.get_cluster(cid, cluster_id)
    if cluster is None:
        return
    members = t.cluster_face_ids(cluster_id)
    if not members and not cluster.iid:
        t.delete_cluster(cid, cluster_id)
        return
    cluster.size = len(members)
    faces = [t.get_face(f) for f in members]
    ranked = sorted((f for f in faces if f), key=lambda f: -quality_weight(f.quality))
    cluster.representatives = [f.face_id for f in ranked[:REPRESENTATIVES]]
    t.put_cluster(cluster)


@dataclass
class ClusterState:
    """What a clustering pass needs to know about a collection, read at once."""

    faces: dict[int, FaceRecord]
    clusters: dict[int, ClusterRecord]
    waiting: list[int]                       # ingested faces in no cluster
    identity_clusters: dict[int, int] = field(default_factory=dict)  # iid -> its cluster

    def photos_of(self, face_ids: list[int]) -> np.ndarray:
        """An integer per face naming its photo: faces of one photo cannot link."""
        codes: dict[str, int] = {}
        return np.asarray([codes.setdefault(self.faces[f].image_sha256, len(codes)) for f in face_ids], np.int64)


def read_state(store: FaceStore, cid: int) -> ClusterState:
    with store.catalog.read() as t:
        face_ids = t.segment_face_ids(cid, ENROLLED) + t.segment_face_ids(cid, INGESTED)
        faces = {fid: t.get_face(fid) for fid in face_ids}
        clusters = {c.cluster_id: c for c in t.iter_clusters(cid)}
        waiting = t.unclustered_face_ids(cid)
    identity_clusters = {c.iid: c.cluster_id for c in clusters.values() if c.iid}
    return ClusterState(faces, clusters, [f for f in waiting if f in faces], identity_clusters)


class ClusterWriter:
    """Applies cluster changes: catalog first, then the live indexes, in order."""

    def __init__(self, store: FaceStore, cid: int) -> None:
        self.store = store
        self.cid = cid
        self._moves: dict[str, tuple[list, list]] = {ENROLLED: ([], []), INGESTED: ([], [])}
        self._shred: list[int] = []
        self._allocated: list[DataKey] = []

    def run(self, edit) -> object:
        """Run `edit(txn, writer)` in one transaction, then update the indexes."""
        store = self.store
        with store.commit_lock:
            try:
                with store.catalog.write() as t:
                    result = edit(t, self)
                    seqs = {}
                    for seg, (added, removed) in self._moves.items():
                        if added or removed:
                            seqs[seg] = t.append_change(self.cid, seg, add=[f for f, _ in added], remove=removed)
            except BaseException:
                store.keyring.shred([k.slot for k in self._allocated])
                raise
            for seg, seq in seqs.items():
                added, removed = self._moves[seg]
                store.apply_to_index(self.cid, seg, seq, added, removed)
        store.keyring.shred(self._shred)
        return result

    def move(self, t: CatalogTxn, face: FaceRecord, iid: int, cluster_id: int) -> FaceRecord:
        """Put a face in a cluster and, if the owner changes, re-seal it for the new owner."""
        updated = FaceRecord(**vars(face))
        updated.cluster_id = cluster_id
        if iid != face.iid:
            vector = open_embedding(self.store.keyring, t, face)
            if iid:
                key = self.store.keyring.open(t.get_identity_by_iid(iid).key_slot, identity_owner(iid))
            else:
                key = self.new_key(t, face_owner(face.face_id))
            if not face.iid:
                self._shred.append(face.key_slot)
                t.delete_slot_owner(face.key_slot)
            updated.iid, updated.key_slot = iid, key.slot
            seal_embedding(t, face.face_id, key, vector)
            self._moves[face.segment][1].append(face.face_id)
            self._moves[updated.segment][0].append((face.face_id, vector))
            for old_or_new, delta in ((face.iid, -1), (iid, +1)):
                if old_or_new:
                    rec = t.get_identity_by_iid(old_or_new)
                    rec.face_count += delta
                    t.put_identity(rec, rec)
            # The photo's ingest record (iid 0) stays: it says the photo was ingested.
            if face.iid:
                left = [f for f in t.get_image_faces(self.cid, face.image_sha256, face.iid) or [] if f != face.face_id]
                t.put_image_faces(self.cid, face.image_sha256, face.iid, left)
            if iid:
                joined = t.get_image_faces(self.cid, face.image_sha256, iid) or []
                t.put_image_faces(self.cid, face.image_sha256, iid, joined + [face.face_id])
        t.put_face(updated, face)
        t.mark_unclustered(self.cid, face.face_id, cluster_id == 0 and iid == 0)
        return updated

    def new_key(self, t: CatalogTxn, owner: bytes) -> DataKey:
        """A fresh data key, recorded as owned; shredded again if the edit fails."""
        key = self.store.keyring.allocate([owner])[0]
        self._allocated.append(key)
        t.put_slot_owner(key.slot, owner)
        return key


def new_cluster(t: CatalogTxn, cid: int, iid: int = 0, *, locked: bool = False, cluster_id: int = 0) -> ClusterRecord:
    rec = ClusterRecord(cluster_id or t.next_id("cluster"), cid, iid=iid, locked=locked, created_ms=now_ms())
    t.put_cluster(rec)
    return rec


def get_cluster(t: CatalogTxn, cid: int, cluster_id: int) -> ClusterRecord:
    rec = t.get_cluster(cid, cluster_id)
    if rec is None:
        raise NotFound(f"cluster {cluster_id} does not exist in this collection; list them with `facebank clusters`")
    return rec


def check_cannot_link(t: CatalogTxn, face_ids: list[int]) -> None:
    photos: dict[str, int] = {}
    for fid in face_ids:
        face = t.get_face(fid)
        if face.image_sha256 in photos:
            raise FailedPrecondition(
                f"faces {photos[face.image_sha256]} and {fid} come from the same photo; one person "
                "appears once in a photo, so they cannot be in one cluster"
            )
        photos[face.image_sha256] = fid


def merge(store: FaceStore, cid: int, into: int, others: list[int]) -> ClusterRecord:
    def edit(t: CatalogTxn, w: ClusterWriter):
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
    def edit(t: CatalogTxn, w: ClusterWriter):
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


def name(store: FaceStore, cid: int, cluster_id: int, external_id: str, display_name: str) -> IdentityRecord:
    """Turn a cluster into an identity (new or existing): its faces become enrolled."""

    def edit(t: CatalogTxn, w: ClusterWriter):
        cluster = get_cluster(t, cid, cluster_id)
        identity = t.get_identity(cid, external_id)
        if identity is None:
            iid = t.next_id("identity")
            key = w.new_key(t, identity_owner(iid))
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
