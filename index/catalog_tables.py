"""The catalog's LMDB tables at the byte level: their names, key encodings,
prefix scans, and the per-group row counts kept in step with every write.

Keys are big-endian integers and UTF-8 strings, so that LMDB's byte order is
the natural order (ids ascending, names alphabetical). catalog_txn.py builds
the typed records on top of this.
"""

from __future__ import annotations

import json
import struct
from typing import Iterator

import lmdb

TABLES = (
    "meta",             # name -> JSON value; counters
    "collections",      # name -> CollectionRecord
    "collection_ids",   # cid -> name
    "identities",       # cid + external id -> IdentityRecord
    "identity_iids",    # iid -> cid + external id
    "identity_faces",   # iid + face id -> ''
    "faces",            # face id -> FaceRecord
    "face_owner",       # face id -> iid (8 bytes): the hot lookup of search
    "segment_faces",    # cid + segment + face id -> ''
    "embeddings",       # face id -> sealed float32 vector
    "images",           # cid + sha256 + iid -> JSON [face ids]
    "metadata_index",   # cid + key \0 value \0 + iid -> ''
    "changes",          # seq -> JSON {c, s, add, remove}
    "clusters",         # cid + cluster id -> ClusterRecord
    "cluster_faces",    # cluster id + face id -> ''
    "unclustered",      # cid + face id -> ''  (ingested, waiting for a clustering pass)
    "forget_intents",   # iid -> ForgetIntent
    "api_keys",         # key id -> ApiKeyRecord
    "key_slots",        # keyring slot -> owner tag: which record a data key belongs to
    # Derived tables, kept in step by this class and rebuilt by `rebuild_derived`:
    "counts",           # table \0 group -> u64: rows per collection (and segment), so no count scans
    "identity_clusters",  # iid + cluster id -> '': the clusters named into an identity
)

# Tables whose rows are counted per group, and how many key bytes name the group
# (cid, or cid + segment): describing a collection reads a counter, not a scan.
COUNTED = {"identities": 4, "segment_faces": 5, "clusters": 4}
DERIVED_VERSION = 1  # raise when a derived table changes meaning: opening rebuilds them

def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def read_u64(b: bytes, offset: int = 0) -> int:
    return struct.unpack_from(">Q", b, offset)[0]


class TableTxn:
    """One LMDB transaction over the catalog's tables, with counted rows."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict, *, write: bool) -> None:
        self.txn = txn
        self.db = dbs
        self.write = write
        # What this transaction changed, for in-memory views updated after commit.
        self.face_owners_changed: dict[int, int] = {}   # face id -> iid (-1: gone)
        self.identities_changed: set[int] = set()
        self.collections_changed = False
        self.api_keys_changed = False
        self._count_deltas: dict[bytes, int] = {}  # counts key -> change, written by flush_counts

    # -- generic helpers --------------------------------------------------------------

    def _get(self, table: str, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.db[table])

    def _put(self, table: str, key: bytes, value: bytes) -> None:
        if table in COUNTED:
            if self.txn.replace(key, value, db=self.db[table]) is None:
                self._count(table, key, 1)
        else:
            self.txn.put(key, value, db=self.db[table])

    def _delete(self, table: str, key: bytes) -> bool:
        deleted = self.txn.delete(key, db=self.db[table])
        if deleted and table in COUNTED:
            self._count(table, key, -1)
        return deleted

    def _prefix(self, table: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        cursor = self.txn.cursor(db=self.db[table])
        if not cursor.set_range(start if start is not None else prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    def count(self, table: str) -> int:
        return self.txn.stat(self.db[table])["entries"]

    # -- derived tables ---------------------------------------------------------------

    @staticmethod
    def count_key(table: str, key: bytes) -> bytes:
        return table.encode() + b"\0" + key[: COUNTED[table]]

    def _count(self, table: str, key: bytes, change: int) -> None:
        name = self.count_key(table, key)
        self._count_deltas[name] = self._count_deltas.get(name, 0) + change

    def counted(self, table: str, group: bytes) -> int:
        """Rows of `table` whose key starts with `group` (as this transaction sees them)."""
        name = self.count_key(table, group)
        raw = self._get("counts", name)
        return (read_u64(raw) if raw else 0) + self._count_deltas.get(name, 0)

    def flush_counts(self) -> None:
        """Write the counts this transaction changed (the catalog calls it before commit)."""
        for name, change in self._count_deltas.items():
            if change:
                raw = self._get("counts", name)
                total = (read_u64(raw) if raw else 0) + change
                if total:
                    self.txn.put(name, u64(total), db=self.db["counts"])
                else:
                    self.txn.delete(name, db=self.db["counts"])
        self._count_deltas.clear()

    # -- meta and counters ----------------------------------------------------------------

    def get_meta(self, name: str, default=None):
        raw = self._get("meta", name.encode())
        return default if raw is None else json.loads(raw)

    def put_meta(self, name: str, value) -> None:
        self._put("meta", name.encode(), json.dumps(value).encode())

    def delete_meta(self, name: str) -> None:
        self._delete("meta", name.encode())

    def meta_with_prefix(self, prefix: str) -> dict[str, object]:
        return {k.decode(): json.loads(v) for k, v in self._prefix("meta", prefix.encode())}

    def delete_prefix(self, table: str, prefix: bytes, limit: int) -> int:
        """Delete up to `limit` keys starting with prefix; returns how many went."""
        keys = []
        for key, _ in self._prefix(table, prefix):
            keys.append(key)
            if len(keys) == limit:
                break
        for key in keys:
            self._delete(table, key)
        return len(keys)

    def next_id(self, counter: str, n: int = 1) -> int:
        """Reserve n consecutive ids; returns the first. Ids are never reused."""
        first = self.get_meta(f"next:{counter}", 1)
        self.put_meta(f"next:{counter}", first + n)
        return first
