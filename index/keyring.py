"""Data keys for crypto-shredding, kept where deleting one really deletes it.

Every subject whose biometric data is stored (an identity, an ingested face not
yet enrolled, an index snapshot) gets its own 256-bit data key. Data keys are
wrapped with AES-GCM under the master key and written to fixed 64-byte slots of
`keyslots.bin`. Shredding a key overwrites its slot in place and fsyncs, so the
key does not linger in free pages the way a deleted LMDB record would; every
ciphertext made with it, wherever a copy of it lives (LMDB free pages, an old
snapshot, a backup of the data directory), becomes unreadable at once.

Slot layout: state (1 byte, 1 = in use) | 3 reserved | nonce (12) | wrapped key (48).
The wrap binds the slot number and the owner tag, so a slot cannot be replayed
for another subject. The file starts with a header slot naming the catalog it
belongs to (key_binding.py checks it at every open), and a lock file keeps a
second process out.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import heapq
import hmac
import os
import stat
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facebank.errors import DataCorruption, FailedPrecondition, NotFound, disk_full
from facebank.index.durable import fsync_dir, private_dir, write_private_file

SLOT_SIZE = 64
_IN_USE = 1
_NONCE = 12
_TAG = 16
SEAL_OVERHEAD = _NONCE + _TAG  # what a sealed blob adds to its plaintext
MASTER_KEY_ENV = "FACEBANK_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
SLOTS_FILE = "keyslots.bin"
LOCK_FILE = "keyring.lock"
_HEADER_MAGIC = b"FBKSLOT2"  # first SLOT_SIZE bytes: magic | catalog id (16) | key check value (32) | 0


def identity_owner(iid: int) -> bytes:
    """Owner tags name what a data key seals: an identity, a face, a snapshot."""
    return b"identity:%d" % iid


def face_owner(face_id: int) -> bytes:
    return b"face:%d" % face_id


def snapshot_owner(cid: int, segment: str) -> bytes:
    return b"snapshot:%d:%s" % (cid, segment.encode())


def embedding_aad(face_id: int) -> bytes:
    """Associated data of a sealed embedding: binds it to its face id."""
    return b"embedding:" + face_id.to_bytes(8, "big")


def crop_aad(face_id: int) -> bytes:
    """Associated data of a sealed face crop: binds it to its face id."""
    return b"crop:" + face_id.to_bytes(8, "big")


class KeyShredded(NotFound):
    """The record's data key was destroyed: its subject is forgotten, or being forgotten
    (between the shred and the erase of its records, readers can still see them)."""


class DataKey:
    """An unwrapped data key: seals and opens blobs (nonce | ciphertext | tag).

    It keeps the key's 32 bytes and makes its cipher for each call (1.2 us more a
    seal or open; bench/results/committed-2026-12-03-scale1m-keyring-cpu2/keyring_cost.py): an
    AESGCM object holds an OpenSSL context of about 2.4 KB, so the keyring's
    cache of remembered keys (65,536) held 160 MB of them, and a start that
    rebuilt its indexes from the catalog, opening every subject's key, settled
    that much above one that read its snapshots."""

    __slots__ = ("_key", "slot")

    def __init__(self, key: bytes, slot: int) -> None:
        self._key = key
        self.slot = slot

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self._key).encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self._key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise DataCorruption("stored data failed its authentication check (wrong key or tampered)") from None

    def seal_into(self, plaintext, aad: bytes, out: bytearray) -> memoryview:
        """seal(), written into the start of `out` (at least len(plaintext) + SEAL_OVERHEAD
        bytes) and returned as a view of it: a snapshot seals its 16 MB chunks through one
        buffer, where a new object for each chunk fragments a heap that searches share."""
        sealed = memoryview(out)[: _NONCE + len(plaintext) + _TAG]
        nonce = os.urandom(_NONCE)
        sealed[:_NONCE] = nonce
        AESGCM(self._key).encrypt_into(nonce, plaintext, aad, sealed[_NONCE:])
        return sealed

    def open_into(self, blob, aad: bytes, out: bytearray) -> memoryview:
        """open(), written into the start of `out` and returned as a view of it."""
        blob = memoryview(blob)
        plain = memoryview(out)[: len(blob) - SEAL_OVERHEAD]
        try:
            AESGCM(self._key).decrypt_into(blob[:_NONCE], blob[_NONCE:], aad, plain)
        except InvalidTag:
            raise DataCorruption("stored data failed its authentication check (wrong key or tampered)") from None
        return plain


def load_master_key(keys_dir: Path) -> bytes | None:
    """The master key: from $FACEBANK_MASTER_KEY (base64 or hex of 32 bytes), else
    from keys_dir/master.key; None if neither exists. Never creates one."""
    raw = os.environ.get(MASTER_KEY_ENV)
    if raw:
        return _parse_key(raw.strip(), f"${MASTER_KEY_ENV}")
    path = keys_dir / MASTER_KEY_FILE
    if not path.exists():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise FailedPrecondition(
            f"{path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}"
        )
    return _parse_key(path.read_text().strip(), str(path))


def create_master_key(keys_dir: Path) -> bytes:
    """A new master key in keys_dir/master.key (0600). Only for a new, empty catalog."""
    private_dir(keys_dir)
    key = AESGCM.generate_key(bit_length=256)
    try:
        fd = os.open(keys_dir / MASTER_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FailedPrecondition(f"{keys_dir / MASTER_KEY_FILE} appeared while this catalog was being created; start again") from None
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64encode(key) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(keys_dir)
    return key


def key_check_value(master_key: bytes, catalog_id: bytes) -> bytes:
    """Binds a master key to one catalog: stored in both, compared at every open."""
    return hmac.new(master_key, b"facebank key check\0" + catalog_id, hashlib.sha256).digest()


def _parse_key(text: str, where: str) -> bytes:
    for decode in (base64.b64decode, binascii.unhexlify):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == 32:
            return key
    raise FailedPrecondition(f"{where} must hold a 32-byte key in base64 or hex")


def read_slots_header(keys_dir: Path) -> tuple[bytes, bytes] | None:
    """(catalog id, key check value) of keys_dir's slot file; None if there is no file.
    A file without the header (written before catalogs were bound) reads as (b"", b"")."""
    path = keys_dir / SLOTS_FILE
    if not path.exists():
        return None
    with open(path, "rb") as f:
        head = f.read(SLOT_SIZE)
    if head[: len(_HEADER_MAGIC)] != _HEADER_MAGIC:
        return b"", b""
    return head[8:24], head[24:56]


def write_slots_header(keys_dir: Path, catalog_id: bytes, kcv: bytes) -> None:
    """Create the slot file for a catalog, or give a legacy one its header (slots move up one)."""
    path = keys_dir / SLOTS_FILE
    body = path.read_bytes() if path.exists() else b""
    if body[: len(_HEADER_MAGIC)] == _HEADER_MAGIC:
        raise FailedPrecondition(f"{path} is already bound to a catalog")
    header = _HEADER_MAGIC + catalog_id + kcv + bytes(SLOT_SIZE - 56)
    write_private_file(path, header + body)


def legacy_slot_opens(keys_dir: Path, master_key: bytes, slot: int, owner: bytes) -> bool:
    """Does `master_key` unwrap this slot of a slot file written before the header existed?"""
    with open(keys_dir / SLOTS_FILE, "rb") as f:
        f.seek(slot * SLOT_SIZE)
        record = f.read(SLOT_SIZE)
    if len(record) != SLOT_SIZE or record[0] != _IN_USE:
        return False
    try:
        _wrapper(master_key).decrypt(record[4:16], record[16:], _aad(slot, owner))
    except InvalidTag:
        return False
    return True


def _wrapper(master_key: bytes) -> AESGCM:
    return AESGCM(hashlib.sha256(b"facebank keyring wrap\0" + master_key).digest())


def acquire_keys_lock(keys_dir: Path):
    """One process at a time on a keys directory (two catalogs sharing one would corrupt each other)."""
    fd = os.open(keys_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FailedPrecondition(
            f"another facebank process is using the keys in {keys_dir}; each data directory needs its own keys directory"
        ) from None
    return handle


class Keyring:
    """Allocates, opens and shreds per-subject data keys in `keyslots.bin`."""

    def __init__(self, keys_dir: Path, master_key: bytes, *, cache_size: int = 65536) -> None:
        """Opens keys_dir's slot file, which must exist with its header (key_binding.py)."""
        self.path = keys_dir / SLOTS_FILE
        fd = os.open(self.path, os.O_RDWR)
        self._file = os.fdopen(fd, "r+b", buffering=0)
        self._wrap = _wrapper(master_key)
        self._mac_key = hashlib.sha256(b"facebank subject hash\0" + master_key).digest()
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, tuple[bytes, DataKey]] = OrderedDict()   # slot -> (owner, key)
        self._cache_size = cache_size
        size = os.fstat(fd).st_size
        self._count = max(0, size // SLOT_SIZE - 1)
        data = self._read_all()
        self._free = [i for i in range(self._count) if data[i * SLOT_SIZE] != _IN_USE]  # a heap
        self._free_set = set(self._free)

    # -- allocation -----------------------------------------------------------------

    def allocate(self, owners: list[bytes]) -> list[DataKey]:
        """New data keys for the given owner tags, durable before this returns."""
        with self._lock, _disk_errors(self.path.parent):
            keys = []
            for owner in owners:
                slot = self._take_free() if self._free else self._grow()
                key = AESGCM.generate_key(bit_length=256)
                nonce = os.urandom(_NONCE)
                record = bytes([_IN_USE, 0, 0, 0]) + nonce + self._wrap.encrypt(nonce, key, _aad(slot, owner))
                os.pwrite(self._file.fileno(), record, _offset(slot))
                data_key = DataKey(key, slot)
                self._remember(slot, owner, data_key)
                keys.append(data_key)
            os.fsync(self._file.fileno())
            return keys

    def open(self, slot: int, owner: bytes) -> DataKey:
        with self._lock:
            cached = self._cache.get(slot)
            if cached is not None and cached[0] == owner:   # another owner: checked against the slot below
                self._cache.move_to_end(slot)
                return cached[1]
            record = os.pread(self._file.fileno(), SLOT_SIZE, _offset(slot)) if slot < self._count else b""
            if len(record) != SLOT_SIZE or record[0] != _IN_USE:
                raise KeyShredded("the data key for this record has been shredded")
            try:
                key = self._wrap.decrypt(record[4:16], record[16:], _aad(slot, owner))
            except InvalidTag:
                raise DataCorruption(f"key slot {slot} failed its check (wrong master key or tampered keyslots.bin)") from None
            data_key = DataKey(key, slot)
            self._remember(slot, owner, data_key)
            return data_key

    def shred(self, slots: list[int]) -> int:
        """Overwrite the slots with zeros in place and fsync. Idempotent.

        A shredded slot is not handed out again until the next start: a reader whose
        catalog snapshot predates the erase of the forgotten records may still look
        the slot up, and must find it shredded (KeyShredded), not someone else's key."""
        if not slots:
            return 0
        with self._lock:
            done = 0
            for slot in set(slots):
                if slot >= self._count:
                    continue
                os.pwrite(self._file.fileno(), bytes(SLOT_SIZE), _offset(slot))
                self._cache.pop(slot, None)
                done += 1
            os.fsync(self._file.fileno())
            return done

    def used_slots(self) -> set[int]:
        with self._lock:
            data = self._read_all()
        return {i for i in range(self._count) if data[i * SLOT_SIZE] == _IN_USE}

    def subject_hash(self, *parts: str) -> str:
        """A keyed hash naming a subject in receipts without revealing it."""
        message = "\0".join(parts).encode()
        return hmac.new(self._mac_key, message, hashlib.sha256).hexdigest()

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._file.close()

    # -- internals ------------------------------------------------------------------

    def _take_free(self) -> int:
        slot = heapq.heappop(self._free)
        self._free_set.discard(slot)
        return slot

    def _grow(self) -> int:
        slot = self._count
        self._count += 1
        return slot

    def _remember(self, slot: int, owner: bytes, key: DataKey) -> None:
        self._cache[slot] = (owner, key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _read_all(self) -> bytes:
        return os.pread(self._file.fileno(), self._count * SLOT_SIZE, SLOT_SIZE)


def _offset(slot: int) -> int:
    return (slot + 1) * SLOT_SIZE  # slot 0 follows the header


@contextmanager
def _disk_errors(where: Path):
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(where, err.strerror) from None
        raise


def _aad(slot: int, owner: bytes) -> bytes:
    return b"facebank-slot\0" + slot.to_bytes(8, "big") + owner
