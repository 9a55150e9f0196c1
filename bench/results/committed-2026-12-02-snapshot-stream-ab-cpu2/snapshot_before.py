"""Encrypted, checksummed snapshot files of vector indexes.

A snapshot is derived state: it saves rebuilding an index from the catalog at
start. Each one is sealed with its own data key from the keyring (rotated at
every write, so an old copy becomes unreadable once its key is shredded) and
carries a SHA-256 of the whole file, so a torn or corrupt file is detected
before any decryption and the index is rebuilt instead.

Layout: magic (8) | header length (4) | header JSON | sealed chunks | SHA-256 (32).
Each chunk is sealed with AES-GCM, its associated data binding the header and
the chunk's position, so chunks cannot be reordered, dropped or spliced.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from facebank.errors import DataCorruption
from facebank.index.durable import fsync_dir
from facebank.index.keyring import DataKey

MAGIC = b"FBSNAP\x00\x01"
CHUNK = 16 * 2**20
_TAG_AND_NONCE = 28


def write_snapshot(path: Path, key: DataKey, header: dict, arrays: dict[str, np.ndarray]) -> int:
    """Write atomically (temp file, fsync, rename); returns the file size."""
    parts = [np.ascontiguousarray(a) for a in arrays.values()]
    layout, offset = [], 0
    for name, array in zip(arrays, parts):
        layout.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset, "nbytes": array.nbytes})
        offset += array.nbytes
    header = {**header, "key_slot": key.slot, "arrays": layout, "payload": offset, "chunk": CHUNK}
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    aad_base = hashlib.sha256(header_bytes).digest()
    chunks = _chunk_count(offset)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        head = MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes
        digest.update(head)
        out.write(head)
        for i, plain in enumerate(_iter_chunks(parts, chunks)):
            sealed = key.seal(plain, _chunk_aad(aad_base, i, chunks))
            digest.update(sealed)
            out.write(sealed)
        out.write(digest.digest())
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return size


def read_header(path: Path) -> dict:
    """The header, after checking the whole file's checksum. Needs no key."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_bytes, digest = _read_head(f, path)
        remaining = size - f.tell() - 32
        if remaining < 0:
            raise DataCorruption(f"snapshot {path.name} is truncated")
        while remaining > 0:
            block = f.read(min(CHUNK, remaining))
            digest.update(block)
            remaining -= len(block)
        if f.read(32) != digest.digest():
            raise DataCorruption(f"snapshot {path.name} failed its checksum (torn or corrupt write)")
    return json.loads(header_bytes)


def read_snapshot(path: Path, key: DataKey) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays); raises DataCorruption if the file is torn, corrupt or not this key's.

    One pass: chunks are decrypted as they are read and the file checksum is
    checked at the end, before anything is returned."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_bytes, digest = _read_head(f, path)
        header = json.loads(header_bytes)
        aad_base = hashlib.sha256(header_bytes).digest()
        total = int(header["payload"])
        chunk = int(header["chunk"])
        chunks = _chunk_count(total)
        expected = f.tell() + total + chunks * _TAG_AND_NONCE + 32
        if expected != size:
            raise DataCorruption(f"snapshot {path.name} is {size} bytes, expected {expected} (torn write)")
        payload = bytearray(total)
        for i in range(chunks):
            plain_len = min(chunk, total - i * chunk)
            sealed = f.read(plain_len + _TAG_AND_NONCE)
            digest.update(sealed)
            payload[i * chunk : i * chunk + plain_len] = key.open(sealed, _chunk_aad(aad_base, i, chunks))
        if f.read(32) != digest.digest():
            raise DataCorruption(f"snapshot {path.name} failed its checksum (torn or corrupt write)")
    view = memoryview(payload)
    arrays = {}
    for entry in header["arrays"]:
        raw = view[entry["offset"] : entry["offset"] + entry["nbytes"]]
        arrays[entry["name"]] = np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(entry["shape"])
    return header, arrays


def _read_head(f, path: Path):
    head = f.read(len(MAGIC) + 4)
    if len(head) < len(MAGIC) + 4 or not head.startswith(MAGIC):
        raise DataCorruption(f"snapshot {path.name} is not a facebank snapshot or is truncated")
    (length,) = struct.unpack_from(">I", head, len(MAGIC))
    header_bytes = f.read(length)
    if len(header_bytes) != length:
        raise DataCorruption(f"snapshot {path.name} is truncated")
    digest = hashlib.sha256(head + header_bytes)
    try:
        json.loads(header_bytes)
    except ValueError:
        raise DataCorruption(f"snapshot {path.name} has a corrupt header") from None
    return header_bytes, digest


def _chunk_count(payload: int) -> int:
    return max(1, -(-payload // CHUNK))


def _iter_chunks(parts: list[np.ndarray], chunks: int):
    """Yield the concatenated bytes of `parts` in CHUNK-sized pieces, without joining them."""
    buffer = bytearray()
    emitted = 0
    for part in parts:
        view = memoryview(part.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(view):
            take = min(CHUNK - len(buffer), len(view) - pos)
            buffer += view[pos : pos + take]
            pos += take
            if len(buffer) == CHUNK:
                yield bytes(buffer)
                emitted += 1
                buffer = bytearray()
    if emitted < chunks:
        yield bytes(buffer)


def _chunk_aad(base: bytes, index: int, total: int) -> bytes:
    return base + struct.pack(">II", index, total)
