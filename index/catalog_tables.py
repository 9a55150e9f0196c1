"""The catalog's LMDB tables at the byte level: their names, key encodings,
prefix scans, authenticated rows, and the per-group row counts kept in step
with every write.

Keys are big-endian integers and UTF-8 strings, so that LMDB's byte order is
the natural order (ids ascending, names alphabetical); a text too long for an
LMDB key (511 bytes) is keyed by a prefix and its SHA-256 (`text_key`).

Every stored value ends with a 16-byte tag: keyed BLAKE2b over the table, the
key and the value, under a key derived from the master key. A flipped bit in a
record, or a record moved under another key, fails its tag and is reported as
damaged (`DamagedRecord`, naming the table and key); it is never read as some
other record. catalog_txn.py builds the typed records on top of this.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Iterator

import lmdb

from facebank.errors import DataCorruption

TABLES = (
    "meta",             # name -> JSON value; counters
    "collections",      # name -> CollectionRecord
    "collection_ids",   # cid -> name
    "identities",       # cid + text_key(external id) -> IdentityRecord
    "identity_iids",    # iid -> cid + text_key(external id)
    "identity_faces",   # iid + face id -> ''
    "faces",            # face id -> FaceRecord
    "face_owner",       # face id -> iid (8 bytes): the hot lookup of search
    "segment_faces",    # cid + segment + face id -> ''
    "embeddings",       # face id -> owner iid (8) + slot (8) + sealed embedding (packed: embedding_codec.py)
    "crops",            # face id -> owner iid (8) + slot (8) + sealed JPEG of the aligned face
    "staged_embeddings",  # face id -> owner iid (8) + slot (8) + sealed vector of the model a migration moves to
    "images",           # cid + sha256 + iid -> JSON [face ids]
    "metadata_index",   # cid + text_key(key) \0 text_key(value) \0 + iid -> ''
    "changes",          # seq -> JSON {c, s, add, remove}
    "clusters",         # cid + cluster id -> ClusterRecord
    "cluster_faces",    # cluster id + face id -> ''
    "unclustered",      # cid + face id -> ''  (ingested, waiting for a clustering pass)
    "forget_intents",   # iid -> ForgetIntent
    "api_keys",         # key id -> ApiKeyRecord
    "key_slots",        # keyring slot -> owner tag: which record a data key belongs to
    "quarantine",       # table \0 key -> the damaged row's bytes, set aside by `facebank check`
    # Derived tables, kept in step by this class and rebuilt by `rebuild_derived`:
    "counts",           # table \0 group -> u64: rows per collection (and segment), so no count scans
    "identity_clusters",  # iid + cluster id -> '': the clusters named into an identity
)

# Tables whose rows are counted per group, and how many key bytes name the group
# (cid, or cid + segment): describing a collection reads a counter, not a scan.
COUNTED = {"identities": 4, "segment_faces": 5, "clusters": 4}
# Tables of rows so large that two fill a page (packed embeddings, embedding_codec.py),
# keyed by face ids handed out in ascending order. LMDB splits a full last page
# by moving its last row over with the new one, so ascending inserts of such
# rows leave one row a page; MDB_APPEND keeps the full page as it is.
APPENDED = frozenset({"embeddings", "staged_embeddings"})
DERIVED_VERSION = 1  # raise when a derived table changes meaning: opening rebuilds them
TAG = 16
KEY_TEXT_MAX = 240  # bytes of a text part of a key; longer ones are keyed by hash


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def read_u64(b: bytes, offset: int = 0) -> int:
    return struct.unpack_from(">Q", b, offset)[0]


def text_key(text: str) -> bytes:
    """A text as (part of) an LMDB key: its UTF-8 when short, else a prefix, 0xFF
    (never in UTF-8, so no short text can collide) and its SHA-256. Keys stay
    under LMDB's 511 bytes for any text the API accepts, and short ones sort naturally."""
    raw = text.encode()
    if len(raw) <= KEY_TEXT_MAX:
        return raw
    return raw[: KEY_TEXT_MAX - 33] + b"\xff" + hashlib.sha256(raw).digest()


class DamagedRecord(DataCorruption):
    """A catalog row failed its integrity tag: named, never served as something else."""

    def __init__(self, table: str, key: bytes) -> None:
        super().__init__(
            f"catalog record {table}/{describe_key(table, key)} is damaged (failed its integrity check); "
            "run `facebank check` to list and quarantine damaged records, or restore the data directory from a backup"
        )
        self.table = table
        self.key = key


def describe_key(table: str, key: bytes) -> str:
    """A key as a person reads it (ids as numbers)."""
    if len(key) == 8 and table in ("faces", "face_owner", "embeddings", "crops", "staged_embeddings", "changes", "forget_intents", "key_slots", "identity_iids"):
        return str(read_u64(key))
    if table in ("meta", "collections", "api_keys"):
        return key.decode(errors="replace")
    return key.hex()


class RecordMac:
    """Seals and checks the integrity tag of every catalog row."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"facebank catalog rows\0" + key).digest()

    def tag(self, table: str, key: bytes, value: bytes) -> bytes:
        h = hashlib.blake2b(key=self._key, digest_size=TAG)
        h.update(table.encode() + b"\0" + struct.pack(">H", len(key)) + key)
        h.update(value)
        return h.digest()

    def seal(self, table: str, key: bytes, value: bytes) -> bytes:
        return value + self.tag(table, key, value)

    def check(self, table: str, key: bytes, stored: bytes) -> bytes | None:
        """The value, or None if the row is damaged."""
        if len(stored) < TAG:
            return None
        value, tag = stored[:-TAG], stored[-TAG:]
        if self.tag(table, key, value) != tag:
            return None
        return value


class TableTxn:
    """One LMDB transaction over the catalog's tables, with authenticated, counted rows.

    tolerant=True (listings, rebuilds, loading views): a damaged row is skipped and
    recorded in `damaged`; otherwise reading one raises DamagedRecord."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict, mac: RecordMac, *, write: bool, began_at: int = 0,
                 tolerant: bool = False) -> None:
        self.txn = txn
        self.db = dbs
        self.mac = mac
        self.write = write
        self.began_at = began_at    # the catalog's commit count when this transaction began
        self.committed_at = 0       # its commit count once committed (write transactions)
        self.tolerant = tolerant
        self.damaged: list[tuple[str, bytes]] = []
        # What this transaction changed, for in-memory views updated after commit.
        self.face_owners_changed: dict[int, int] = {}   # face id -> iid (-1: gone)
        self.identities_changed: set[int] = set()
        self.metadata_changed: list[tuple[int, bytes, int, bool]] = []  # (cid, key=value pair, iid, added)
        self.collections_changed = False
        self.api_keys_changed = False
        self._count_deltas: dict[bytes, int] = {}  # counts key -> change, written by flush_counts
        # While a compaction copies the catalog, every row this transaction writes or
        # deletes, as stored (the copy replays them; see Catalog.compact). None: not asked.
        self.journal: list[tuple[str, bytes | None, bytes | None]] | None = None   # key None: table emptied

    # -- generic helpers --------------------------------------------------------------

    def _open(self, table: str, key: bytes, stored: bytes) -> bytes | None:
        value = self.mac.check(table, key, stored)
        if value is None:
            if not self.tolerant:
                raise DamagedRecord(table, key)
            self.damaged.append((table, key))
        return value

    def _get(self, table: str, key: bytes) -> bytes | None:
        stored = self.txn.get(key, db=self.db[table])
        return None if stored is None else self._open(table, key, stored)

    def _put(self, table: str, key: bytes, value: bytes) -> None:
        stored = self.mac.seal(table, key, value)
        if table in COUNTED:
            if self.txn.replace(key, stored, db=self.db[table]) is None:
                self._count(table, key, 1)
        elif not (table in APPENDED and self.txn.put(key, stored, append=True, db=self.db[table])):
            self.txn.put(key, stored, db=self.db[table])   # not past the last key: an ordinary insert or overwrite
        if self.journal is not None:
            self.journal.append((table, key, stored))

    def _delete(self, table: str, key: bytes) -> bool:
        deleted = self.txn.delete(key, db=self.db[table])
        if deleted and table in COUNTED:
            self._count(table, key, -1)
        if deleted and self.journal is not None:
            self.journal.append((table, key, None))
        return deleted

    def _prefix(self, table: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Rows whose key starts with prefix, in key order (damaged ones: see `tolerant`)."""
        cursor = self.txn.cursor(db=self.db[table])
        if not cursor.set_range(start if start is not None else prefix):
            return
        for key, stored in cursor:
            if not key.startswith(prefix):
                return
            value = self._open(table, key, stored)
            if value is not None:
                yield key, value

    def raw_rows(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        """Every row as stored (tag included), for integrity checks and quarantine."""
        yield from self.txn.cursor(db=self.db[table]).iternext(keys=True, values=True)

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
                    self._put("counts", name, u64(total))
                else:
                    self._delete("counts", name)
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
        """Delete up to `limit` keys starting with prefix (damaged rows too); returns how many went."""
        keys = []
        cursor = self.txn.cursor(db=self.db[table])
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(prefix) or len(keys) == limit:
                    break
                keys.append(key)
        for key in keys:
            self._delete(table, key)
        return len(keys)

    def next_id(self, counter: str, n: int = 1) -> int:
        """Reserve n consecutive ids; returns the first. Ids are never reused."""
        first = self.get_meta(f"next:{counter}", 1)
        self.put_meta(f"next:{counter}", first + n)
        return first
