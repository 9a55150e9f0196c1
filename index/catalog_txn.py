"""Typed access to the catalog's tables inside one LMDB transaction.

Values are JSON records (see records.py; face records are binary,
face_record_codec.py), sealed embedding blobs, or empty
(for index tables); the tables, key encodings and counts are in
catalog_tables.py.
"""

from __future__ import annotations

import json
from typing import Iterator

from facebank.index.catalog_tables import COUNTED, TableTxn, read_u64, text_key, u32, u64
from facebank.index.face_record_codec import decode_face, encode_face
from facebank.index.records import (
    ApiKeyRecord,
    ClusterRecord,
    CollectionRecord,
    FaceRecord,
    ForgetIntent,
    IdentityRecord,
    dumps,
    loads,
)

_SEGMENT_CODE = {"enrolled": b"e", "ingested": b"i"}


def metadata_pair(key: str, value: str) -> bytes:
    """A metadata key=value as the metadata index (and its in-memory view) names it."""
    return text_key(key) + b"\0" + text_key(value)


class CatalogTxn(TableTxn):
    """The catalog's records (collections, identities, faces, clusters, ...) in one transaction."""

    # -- collections ----------------------------------------------------------------------

    def get_collection(self, name: str) -> CollectionRecord | None:
        raw = self._get("collections", name.encode())
        return None if raw is None else loads(CollectionRecord, raw)

    def get_collection_by_id(self, cid: int) -> CollectionRecord | None:
        name = self._get("collection_ids", u32(cid))
        return None if name is None else self.get_collection(name.decode())

    def list_collections(self) -> list[CollectionRecord]:
        return [loads(CollectionRecord, v) for _, v in self._prefix("collections", b"")]

    def put_collection(self, rec: CollectionRecord) -> None:
        self.collections_changed = True
        self._put("collections", rec.name.encode(), dumps(rec))
        self._put("collection_ids", u32(rec.id), rec.name.encode())

    def delete_collection(self, rec: CollectionRecord) -> None:
        self.collections_changed = True
        self._delete("collections", rec.name.encode())
        self._delete("collection_ids", u32(rec.id))

    # -- identities ---------------------------------------------------------------------

    @staticmethod
    def _identity_key(cid: int, external_id: str) -> bytes:
        return u32(cid) + text_key(external_id)

    def get_identity(self, cid: int, external_id: str) -> IdentityRecord | None:
        raw = self._get("identities", self._identity_key(cid, external_id))
        return None if raw is None else loads(IdentityRecord, raw)

    def get_identity_by_iid(self, iid: int) -> IdentityRecord | None:
        key = self._get("identity_iids", u64(iid))
        if key is None:
            return None
        raw = self._get("identities", key)
        return None if raw is None else loads(IdentityRecord, raw)

    def put_identity(self, rec: IdentityRecord, previous: IdentityRecord | None = None) -> None:
        self.identities_changed.add(rec.iid)
        key = self._identity_key(rec.collection_id, rec.external_id)
        self._put("identities", key, dumps(rec))
        self._put("identity_iids", u64(rec.iid), key)
        old = previous.metadata if previous else {}
        for k, v in old.items():
            if rec.metadata.get(k) != v:
                self._delete("metadata_index", self._metadata_key(rec.collection_id, k, v, rec.iid))
                self.metadata_changed.append((rec.collection_id, metadata_pair(k, v), rec.iid, False))
        for k, v in rec.metadata.items():
            if old.get(k) != v:
                self._put("metadata_index", self._metadata_key(rec.collection_id, k, v, rec.iid), b"")
                self.metadata_changed.append((rec.collection_id, metadata_pair(k, v), rec.iid, True))

    def delete_identity(self, rec: IdentityRecord) -> None:
        self.identities_changed.add(rec.iid)
        self._delete("identities", self._identity_key(rec.collection_id, rec.external_id))
        self._delete("identity_iids", u64(rec.iid))
        for k, v in rec.metadata.items():
            self._delete("metadata_index", self._metadata_key(rec.collection_id, k, v, rec.iid))
            self.metadata_changed.append((rec.collection_id, metadata_pair(k, v), rec.iid, False))

    def iter_identities(self, cid: int, after: bytes = b"") -> Iterator[tuple[bytes, IdentityRecord]]:
        """(position, record) in id order; `after` is a position from an earlier page."""
        prefix = u32(cid)
        start = prefix + after + b"\0" if after else prefix
        for key, value in self._prefix("identities", prefix, start):
            yield key[4:], loads(IdentityRecord, value)

    def count_identities(self, cid: int) -> int:
        return self.counted("identities", u32(cid))

    @staticmethod
    def _metadata_prefix(cid: int, key: str, value: str) -> bytes:
        return u32(cid) + metadata_pair(key, value) + b"\0"

    def iter_metadata_index(self) -> Iterator[tuple[int, bytes, int]]:
        """(collection id, metadata_pair, iid) of every row."""
        for key, _ in self._prefix("metadata_index", b""):
            yield int.from_bytes(key[:4], "big"), key[4:-9], read_u64(key, len(key) - 8)

    def _metadata_key(self, cid: int, key: str, value: str, iid: int) -> bytes:
        return self._metadata_prefix(cid, key, value) + u64(iid)

    def identity_face_ids(self, iid: int) -> list[int]:
        prefix = u64(iid)
        return [read_u64(k, 8) for k, _ in self._prefix("identity_faces", prefix)]

    # -- faces and embeddings ---------------------------------------------------------------

    def get_face(self, face_id: int) -> FaceRecord | None:
        raw = self._get("faces", u64(face_id))
        return None if raw is None else decode_face(raw)

    def put_face(self, rec: FaceRecord, previous: FaceRecord | None = None) -> None:
        """Store a face and keep its index tables (identity, segment, cluster) in step."""
        fid = u64(rec.face_id)
        self._put("faces", fid, encode_face(rec))
        self._put("face_owner", fid, u64(rec.iid))
        self.face_owners_changed[rec.face_id] = rec.iid
        if previous is not None:
            self._unlink_face(previous)
        if rec.iid:
            self._put("identity_faces", u64(rec.iid) + fid, b"")
        self._put("segment_faces", u32(rec.collection_id) + _SEGMENT_CODE[rec.segment] + fid, b"")
        if rec.cluster_id:
            self._put("cluster_faces", u64(rec.cluster_id) + fid, b"")

    def delete_face(self, rec: FaceRecord) -> None:
        self._delete("faces", u64(rec.face_id))
        self._delete("face_owner", u64(rec.face_id))
        self.face_owners_changed[rec.face_id] = -1
        self._delete("embeddings", u64(rec.face_id))
        self._delete("crops", u64(rec.face_id))
        self._delete("staged_embeddings", u64(rec.face_id))
        self._delete("unclustered", u32(rec.collection_id) + u64(rec.face_id))
        self._unlink_face(rec)

    def _unlink_face(self, rec: FaceRecord) -> None:
        fid = u64(rec.face_id)
        if rec.iid:
            self._delete("identity_faces", u64(rec.iid) + fid)
        self._delete("segment_faces", u32(rec.collection_id) + _SEGMENT_CODE[rec.segment] + fid)
        if rec.cluster_id:
            self._delete("cluster_faces", u64(rec.cluster_id) + fid)

    def face_owners_after(self, after: int, limit: int) -> tuple[list[int], list[int]]:
        """(face ids, their iids) of up to `limit` faces after face `after`, ascending."""
        face_ids, iids = [], []
        for key, value in self._prefix("face_owner", b"", start=u64(after + 1)):
            face_ids.append(read_u64(key))
            iids.append(read_u64(value))
            if len(face_ids) == limit:
                break
        return face_ids, iids

    def face_owners(self, face_ids) -> list[int]:
        """The iid of each face (0 if not enrolled, -1 if gone or its row damaged)."""
        out = []
        for fid in face_ids:
            value = self._get("face_owner", u64(fid)) if fid >= 0 else None
            out.append(-1 if value is None else read_u64(value))
        return out

    def segment_face_ids(self, cid: int, segment: str, limit: int = 0) -> list[int]:
        out = []
        for face_id in self.iter_segment_face_ids(cid, segment):
            out.append(face_id)
            if len(out) == limit:
                break
        return out

    def iter_segment_face_ids(self, cid: int, segment: str) -> Iterator[int]:
        for key, _ in self._prefix("segment_faces", u32(cid) + _SEGMENT_CODE[segment]):
            yield read_u64(key, 5)

    def count_segment(self, cid: int, segment: str) -> int:
        return self.counted("segment_faces", u32(cid) + _SEGMENT_CODE[segment])

    def put_embedding(self, face_id: int, iid: int, slot: int, sealed: bytes) -> None:
        """A sealed embedding, with what opening it needs (owner iid, key slot) in front."""
        self._put("embeddings", u64(face_id), u64(iid) + u64(slot) + sealed)

    def get_embedding(self, face_id: int) -> tuple[int, int, bytes] | None:
        """(owner iid, key slot, sealed vector)."""
        raw = self._get("embeddings", u64(face_id))
        return None if raw is None else (read_u64(raw), read_u64(raw, 8), raw[16:])

    def iter_embeddings(self, face_ids, table: str = "embeddings") -> Iterator[tuple[int, int, int, bytes]]:
        """(face id, owner iid, key slot, sealed) of those of `face_ids` (ascending) that have one,
        read with one cursor (a rebuild reads a million); `staged_embeddings` alike."""
        cursor = self.txn.cursor(db=self.db[table])
        for fid in face_ids:
            key = u64(fid)
            stored = cursor.get(key)
            if stored is None:
                continue
            raw = self._open(table, key, stored)
            if raw is not None:
                yield fid, read_u64(raw), read_u64(raw, 8), raw[16:]

    def put_staged(self, face_id: int, iid: int, slot: int, sealed: bytes) -> None:
        """A migration's new embedding of a face, sealed like the live one (same key, same binding)."""
        self._put("staged_embeddings", u64(face_id), u64(iid) + u64(slot) + sealed)

    def get_staged(self, face_id: int) -> tuple[int, int, bytes] | None:
        raw = self._get("staged_embeddings", u64(face_id))
        return None if raw is None else (read_u64(raw), read_u64(raw, 8), raw[16:])

    def delete_staged(self, face_id: int) -> None:
        self._delete("staged_embeddings", u64(face_id))

    def put_crop(self, face_id: int, iid: int, slot: int, sealed: bytes) -> None:
        """A sealed face crop, with what opening it needs (owner iid, key slot) in front."""
        self._put("crops", u64(face_id), u64(iid) + u64(slot) + sealed)

    def get_crop(self, face_id: int) -> tuple[int, int, bytes] | None:
        """(owner iid, key slot, sealed crop)."""
        raw = self._get("crops", u64(face_id))
        return None if raw is None else (read_u64(raw), read_u64(raw, 8), raw[16:])

    # -- image index: makes enrollment and ingestion idempotent ----------------------------

    @staticmethod
    def _image_key(cid: int, sha256_hex: str, iid: int) -> bytes:
        return u32(cid) + bytes.fromhex(sha256_hex) + u64(iid)

    def get_image_faces(self, cid: int, sha256_hex: str, iid: int) -> list[int] | None:
        raw = self._get("images", self._image_key(cid, sha256_hex, iid))
        return None if raw is None else json.loads(raw)

    def put_image_faces(self, cid: int, sha256_hex: str, iid: int, face_ids: list[int]) -> None:
        key = self._image_key(cid, sha256_hex, iid)
        if face_ids:
            self._put("images", key, json.dumps(face_ids).encode())
        else:
            self._delete("images", key)

    def faces_of_image(self, cid: int, sha256_hex: str) -> list[int]:
        """Every face stored from this image in the collection, enrolled or ingested."""
        prefix = u32(cid) + bytes.fromhex(sha256_hex)
        return [fid for _, v in self._prefix("images", prefix) for fid in json.loads(v)]

    def unlink_image_faces(self, cid: int, sha256_hex: str, face_ids: set[int]) -> int:
        """Take these faces out of every record of the image (enrolled or ingested);
        a record left naming no face goes. Returns how many records changed."""
        prefix = u32(cid) + bytes.fromhex(sha256_hex)
        changed = 0
        for key, value in list(self._prefix("images", prefix)):
            listed = json.loads(value)
            kept = [f for f in listed if f not in face_ids]
            if len(kept) != len(listed):
                changed += 1
                self.put_image_faces(cid, sha256_hex, read_u64(key, len(prefix)), kept)
        return changed

    # -- change log ------------------------------------------------------------------

    def append_change(self, cid: int, segment: str, add: list[int] = (), remove: list[int] = ()) -> int:
        seq = self.get_meta("seq", 0) + 1
        self.put_meta("seq", seq)
        change = {"c": cid, "s": segment, "add": list(add), "remove": list(remove)}
        self._put("changes", u64(seq), json.dumps(change, separators=(",", ":")).encode())
        return seq

    def last_seq(self) -> int:
        return self.get_meta("seq", 0)

    def iter_changes(self, after: int) -> Iterator[tuple[int, dict]]:
        for key, value in self._prefix("changes", b"", u64(after + 1)):
            yield read_u64(key), json.loads(value)

    def trim_changes(self, upto: int) -> int:
        keys = [k for k, _ in self._prefix("changes", b"") if read_u64(k) <= upto]
        for key in keys:
            self._delete("changes", key)
        return len(keys)

    # -- clusters ------------------------------------------------------------------------

    def get_cluster(self, cid: int, cluster_id: int) -> ClusterRecord | None:
        raw = self._get("clusters", u32(cid) + u64(cluster_id))
        return None if raw is None else loads(ClusterRecord, raw)

    def put_cluster(self, rec: ClusterRecord) -> None:
        previous = self.get_cluster(rec.collection_id, rec.cluster_id)
        if previous is not None and previous.iid and previous.iid != rec.iid:
            self._delete("identity_clusters", u64(previous.iid) + u64(rec.cluster_id))
        self._put("clusters", u32(rec.collection_id) + u64(rec.cluster_id), dumps(rec))
        if rec.iid:
            self._put("identity_clusters", u64(rec.iid) + u64(rec.cluster_id), b"")

    def delete_cluster(self, cid: int, cluster_id: int) -> None:
        previous = self.get_cluster(cid, cluster_id)
        if previous is not None and previous.iid:
            self._delete("identity_clusters", u64(previous.iid) + u64(cluster_id))
        self._delete("clusters", u32(cid) + u64(cluster_id))

    def count_clusters(self, cid: int) -> int:
        return self.counted("clusters", u32(cid))

    def identity_cluster_ids(self, iid: int) -> list[int]:
        """The clusters named into identity `iid`."""
        return [read_u64(k, 8) for k, _ in self._prefix("identity_clusters", u64(iid))]

    def iter_clusters(self, cid: int) -> Iterator[ClusterRecord]:
        for _, value in self._prefix("clusters", u32(cid)):
            yield loads(ClusterRecord, value)

    def cluster_face_ids(self, cluster_id: int) -> list[int]:
        prefix = u64(cluster_id)
        return [read_u64(k, 8) for k, _ in self._prefix("cluster_faces", prefix)]

    def mark_unclustered(self, cid: int, face_id: int, waiting: bool) -> None:
        key = u32(cid) + u64(face_id)
        if waiting:
            self._put("unclustered", key, b"")
        else:
            self._delete("unclustered", key)

    def unclustered_face_ids(self, cid: int) -> list[int]:
        return [read_u64(k, 4) for k, _ in self._prefix("unclustered", u32(cid))]

    # -- forget intents ----------------------------------------------------------------

    def put_intent(self, intent: ForgetIntent) -> None:
        self._put("forget_intents", u64(intent.iid), dumps(intent))

    def delete_intent(self, iid: int) -> None:
        self._delete("forget_intents", u64(iid))

    def iter_intents(self) -> list[ForgetIntent]:
        return [loads(ForgetIntent, v) for _, v in self._prefix("forget_intents", b"")]

    # -- key slot owners -------------------------------------------------------------

    def put_slot_owner(self, slot: int, owner: bytes) -> None:
        self._put("key_slots", u64(slot), owner)

    def delete_slot_owner(self, slot: int) -> None:
        self._delete("key_slots", u64(slot))

    def owned_slots(self) -> set[int]:
        return {read_u64(k) for k, _ in self._prefix("key_slots", b"")}

    # -- API keys ------------------------------------------------------------------------

    def put_api_key(self, rec: ApiKeyRecord) -> None:
        self.api_keys_changed = True
        self._put("api_keys", rec.key_id.encode(), dumps(rec))

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        raw = self._get("api_keys", key_id.encode())
        return None if raw is None else loads(ApiKeyRecord, raw)

    def delete_api_key(self, key_id: str) -> bool:
        self.api_keys_changed = True
        return self._delete("api_keys", key_id.encode())

    def list_api_keys(self) -> list[ApiKeyRecord]:
        return [loads(ApiKeyRecord, v) for _, v in self._prefix("api_keys", b"")]

    # -- quarantine ------------------------------------------------------------------

    def quarantine(self, table: str, key: bytes, stored: bytes) -> None:
        """Set a damaged row aside: out of its table (so it is never read again), kept as it was."""
        self.txn.delete(key, db=self.db[table])
        if self.journal is not None:
            self.journal.append((table, key, None))
        self._put("quarantine", table.encode() + b"\0" + key, stored)

    def quarantined(self) -> list[tuple[str, bytes]]:
        return [(k.split(b"\0", 1)[0].decode(), k.split(b"\0", 1)[1]) for k, _ in self._prefix("quarantine", b"")]

    # -- derived tables ---------------------------------------------------------------

    def rebuild_derived(self) -> None:
        """Recompute the derived tables (counts, identity_clusters) from the records:
        a catalog written before they existed, or by an older version. One scan, at open."""
        for table in ("counts", "identity_clusters"):
            self.txn.drop(self.db[table], delete=False)
            if self.journal is not None:
                self.journal.append((table, None, None))   # emptied
        for table, width in COUNTED.items():
            groups: dict[bytes, int] = {}
            for key in self.txn.cursor(db=self.db[table]).iternext(keys=True, values=False):
                groups[key[:width]] = groups.get(key[:width], 0) + 1
            for group, n in groups.items():
                self._put("counts", self.count_key(table, group), u64(n))
        for _, value in self._prefix("clusters", b""):
            rec = loads(ClusterRecord, value)
            if rec.iid:
                self._put("identity_clusters", u64(rec.iid) + u64(rec.cluster_id), b"")
