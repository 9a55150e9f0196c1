"""Upgrading a catalog written before rows were authenticated and bound to their keys.

Such a catalog (facebank 0.1) stores bare values. It is checked against its
keys first (the master key must unwrap one of its data keys), then copied row
by row into a new file with every row tagged, long texts keyed by hash and each
sealed embedding carrying its owner and key slot; the new file replaces the old
one atomically, so a crash leaves either the old catalog or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import lmdb

from facebank.errors import FailedPrecondition
from facebank.index.catalog import DATA_FILE, Catalog
from facebank.index.catalog_tables import TABLES, read_u64, text_key, u32, u64
from facebank.index.durable import fsync_dir, private_dir
from facebank.index.face_record_codec import decode_face
from facebank.index.keyring import key_check_value, legacy_slot_opens, read_slots_header
from facebank.index.records import FaceRecord

BATCH = 20_000


def upgrade_legacy(catalog: Catalog, keys_dir: Path, master: bytes) -> dict:
    """Rewrite `catalog` in the current format and bind it; returns its binding."""
    with catalog.env.begin(buffers=False) as txn:
        first_slot = next(txn.cursor(db=catalog._dbs["key_slots"]).iternext(), None)
    if first_slot is not None:
        header = read_slots_header(keys_dir)
        if header is None:
            raise FailedPrecondition(f"{keys_dir / 'keyslots.bin'} is missing, but the catalog has data keys there; nothing was changed")
        if header != (b"", b""):
            raise FailedPrecondition(f"{keys_dir / 'keyslots.bin'} belongs to another catalog; nothing was changed")
        if not legacy_slot_opens(keys_dir, master, read_u64(first_slot[0]), first_slot[1]):
            raise FailedPrecondition(f"the master key does not open this catalog's data keys in {keys_dir}; nothing was changed")
    catalog_id = os.urandom(16)
    binding = {"catalog_id": catalog_id.hex(), "kcv": key_check_value(master, catalog_id).hex()}
    scratch = catalog.path.with_name(catalog.path.name + ".upgrade")
    shutil.rmtree(scratch, ignore_errors=True)
    private_dir(scratch)
    fresh = lmdb.open(str(scratch), map_size=catalog.map_size, max_dbs=len(TABLES) + 2, subdir=True, mode=0o600)
    try:
        with catalog.env.begin(buffers=False) as source:
            owners = {key: decode_face(value) for key, value in source.cursor(db=catalog._dbs["faces"]).iternext()}
            for table in TABLES:
                target = fresh.open_db(table.encode())
                rows = (_convert(table, k, v, owners) for k, v in source.cursor(db=catalog._dbs[table]).iternext())
                batch = []
                for key, value in rows:
                    batch.append((key, catalog.mac.seal(table, key, value)))
                    if len(batch) == BATCH:
                        _put(fresh, target, batch)
                with fresh.begin(write=True, db=target) as txn:
                    for key, value in batch:
                        txn.put(key, value)
        meta = fresh.open_db(b"meta")
        with fresh.begin(write=True, db=meta) as txn:
            txn.put(b"binding", catalog.mac.seal("meta", b"binding", json.dumps(binding).encode()))
            txn.delete(b"derived_version")  # counts are rebuilt under the new keys at open
        fresh.sync(True)
    finally:
        fresh.close()
    catalog.env.close()
    os.replace(scratch / DATA_FILE, catalog.path / DATA_FILE)
    fsync_dir(catalog.path)
    shutil.rmtree(scratch, ignore_errors=True)
    catalog._open_env()
    return binding


def _put(env: lmdb.Environment, db, batch: list) -> None:
    with env.begin(write=True, db=db) as txn:
        for key, value in batch:
            txn.put(key, value)
    batch.clear()


def _convert(table: str, key: bytes, value: bytes, faces: dict[bytes, FaceRecord]) -> tuple[bytes, bytes]:
    """One legacy row in the current layout."""
    if table == "embeddings":
        face = faces.get(key)
        return key, u64(face.iid if face else 0) + u64(face.key_slot if face else 0) + value
    if table == "identities":
        return key[:4] + text_key(key[4:].decode()), value
    if table == "identity_iids":
        return key, value[:4] + text_key(value[4:].decode())
    if table == "metadata_index":
        name, text, _ = key[4:-8].split(b"\0")
        return u32(read_u32(key)) + text_key(name.decode()) + b"\0" + text_key(text.decode()) + b"\0" + key[-8:], value
    return key, value


def read_u32(b: bytes) -> int:
    return int.from_bytes(b[:4], "big")
