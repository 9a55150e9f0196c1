"""A catalog and its keys, bound to each other and checked before anything is written.

A catalog is created with a random id and a key check value (an HMAC of the id
under the master key); both are stored in the catalog and in the header of the
keys directory's slot file. At every open, before the first write:

- a catalog with data but no master key, or a different one, is refused;
- a slot file that is missing (while the catalog owns data keys) or belongs
  to another catalog is refused;
- a keys directory bound to a catalog, next to a data directory holding none
  (an unmounted volume), is refused;
- a master key is created only for a new, empty catalog.

Each refusal is one line naming the directories, and changes nothing. A
catalog written before binding existed is upgraded once (catalog_upgrade.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from facebank.errors import FailedPrecondition
from facebank.index.catalog import DATA_FILE, Catalog
from facebank.index.catalog_tables import TAG, RecordMac
from facebank.index.durable import private_dir
from facebank.index.keyring import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    Keyring,
    acquire_keys_lock,
    create_master_key,
    key_check_value,
    load_master_key,
    read_slots_header,
    write_slots_header,
)

UNCHANGED = "nothing was changed"


@dataclass
class OpenedData:
    catalog: Catalog
    keyring: Keyring
    keys_lock: object
    created: bool          # a new catalog was made by this open


def open_bound(data_dir: Path, keys_dir: Path, *, map_size: int) -> OpenedData:
    """Open (or create, when both are new) the catalog under data_dir and the keys in keys_dir."""
    catalog_path = data_dir / "catalog"
    exists = (catalog_path / DATA_FILE).exists()
    header = read_slots_header(keys_dir) if keys_dir.is_dir() else None
    master = load_master_key(keys_dir)
    if not exists and header is not None:
        bound_to = header[0].hex() or "an unbound older catalog"
        raise FailedPrecondition(
            f"{keys_dir} holds the data keys of catalog {bound_to}, but {data_dir} holds no catalog: is the data volume "
            f"mounted? A new catalog needs its own, empty keys directory; {UNCHANGED}"
        )
    if exists:
        return _open_existing(data_dir, keys_dir, catalog_path, header, master, map_size)
    return _create(data_dir, keys_dir, catalog_path, master, map_size)


def _create(data_dir: Path, keys_dir: Path, catalog_path: Path, master: bytes | None, map_size: int) -> OpenedData:
    private_dir(data_dir)
    private_dir(keys_dir)
    lock = acquire_keys_lock(keys_dir)
    try:
        master = master or create_master_key(keys_dir)
        catalog_id = os.urandom(16)
        kcv = key_check_value(master, catalog_id)
        catalog = Catalog(catalog_path, RecordMac(master), map_size=map_size)
        try:
            with catalog.write() as t:  # before any unit of work exists: the catalog's first transaction
                t.put_meta("binding", {"catalog_id": catalog_id.hex(), "kcv": kcv.hex()})
            write_slots_header(keys_dir, catalog_id, kcv)
            return OpenedData(catalog, Keyring(keys_dir, master), lock, created=True)
        except BaseException:
            catalog.close()
            raise
    except BaseException:
        lock.close()
        raise


def _open_existing(data_dir: Path, keys_dir: Path, catalog_path: Path, header, master: bytes | None, map_size: int) -> OpenedData:
    if not keys_dir.is_dir() and master is None:
        raise FailedPrecondition(_no_master(data_dir, keys_dir))
    lock = None   # taken once nothing is refused: a refused start leaves not even a lock file behind
    try:
        catalog = Catalog(catalog_path, RecordMac(master or bytes(32)), map_size=map_size)
        try:
            binding = _raw_binding(catalog)
            if binding is None and not catalog.is_empty:
                from facebank.index.catalog_upgrade import upgrade_legacy

                if master is None:
                    raise FailedPrecondition(_no_master(data_dir, keys_dir))
                lock = acquire_keys_lock(keys_dir) if keys_dir.is_dir() else None
                binding = upgrade_legacy(catalog, keys_dir, master)
            if binding is None:  # an empty catalog: bind it now, as a new one
                if header is not None:
                    raise FailedPrecondition(f"{keys_dir} holds the data keys of another catalog; {UNCHANGED}")
                catalog.close()
                if lock:
                    lock.close()
                return _create(data_dir, keys_dir, catalog_path, master, map_size)
            catalog_id, kcv = bytes.fromhex(binding["catalog_id"]), bytes.fromhex(binding["kcv"])
            if master is None:
                raise FailedPrecondition(_no_master(data_dir, keys_dir))
            if key_check_value(master, catalog_id) != kcv:
                where = f"${MASTER_KEY_ENV}" if os.environ.get(MASTER_KEY_ENV) else str(keys_dir / MASTER_KEY_FILE)
                raise FailedPrecondition(
                    f"the master key in {where} is not the one the catalog in {data_dir} was created with: use that "
                    f"catalog's keys directory (--keys-dir) or master key; {UNCHANGED}"
                )
            with catalog.read() as t:  # the binding row's own tag, now that the key is known
                t.get_meta("binding")
                owns_keys = t.count("key_slots") > 0
            if header is None or header == (b"", b""):
                if header is None and owns_keys:
                    raise FailedPrecondition(
                        f"{keys_dir / 'keyslots.bin'} is missing, but the catalog in {data_dir} has data keys there: mount "
                        f"the keys volume or pass --keys-dir; {UNCHANGED}"
                    )
                private_dir(keys_dir)
                lock = lock or acquire_keys_lock(keys_dir)
                write_slots_header(keys_dir, catalog_id, kcv)  # an interrupted creation or upgrade: finish it
            elif header[0] != catalog_id or header[1] != kcv:
                raise FailedPrecondition(
                    f"{keys_dir / 'keyslots.bin'} belongs to another catalog ({header[0].hex()}), not to the one in "
                    f"{data_dir} ({catalog_id.hex()}): each data directory needs its own keys directory; {UNCHANGED}"
                )
            if lock is None and keys_dir.is_dir():
                lock = acquire_keys_lock(keys_dir)
            return OpenedData(catalog, Keyring(keys_dir, master), lock, created=False)
        except BaseException:
            catalog.close()
            raise
    except BaseException:
        if lock:
            lock.close()
        raise


def _raw_binding(catalog: Catalog) -> dict | None:
    raw = catalog.raw_meta("binding")
    if raw is None:
        return None
    try:
        return json.loads(raw[:-TAG])
    except ValueError:
        raise FailedPrecondition(f"the catalog in {catalog.path} has a damaged binding record; restore it from a backup") from None


def _no_master(data_dir: Path, keys_dir: Path) -> str:
    return (
        f"no master key for the catalog in {data_dir}: {keys_dir / MASTER_KEY_FILE} does not exist and "
        f"{MASTER_KEY_ENV} is not set. Mount the keys volume or pass --keys-dir (FACEBANK_KEYS_DIR); {UNCHANGED}"
    )
