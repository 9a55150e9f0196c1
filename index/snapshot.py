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
from typing import Callable, Protocol, Union

import numpy as np

from facebank.errors import DataCorruption
from facebank.index.durable import fsync_dir
from facebank.index.faults import delay_point
from facebank.index.keyring import SEAL_OVERHEAD, DataKey

MAGIC = b"FBSNAP\x00\x01"
CHUNK = 16 * 2**20


class Streamed(Protocol):
    """A snapshot entry written piece by piece (a FAISS index: see vectors.FaissBlob)
    instead of from an array that would be a second copy of it in memory."""

    nbytes: int

    def write_to(self, sink: Callable[[bytes], object]) -> None: ...


Entry = Union[np.ndarray, Streamed]


class StagedSnapshot:
    """A snapshot written to its temp file, not yet synced nor in place."""

    def __init__(self, tmp: Path, path: Path) -> None:
        self.tmp, self.path = tmp, path

    def commit(self) -> int:
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
            size = f.seek(0, os.SEEK_END)
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return size

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


class SnapshotStopped(Exception):
    """`stop()` turned true while a snapshot was being written: it was left, its temp file removed."""


def stage_snapshot(path: Path, key: DataKey, header: dict, arrays: dict[str, Entry],
                   stop: Callable[[], bool] = lambda: False) -> StagedSnapshot:
    """Seal the entries into `path`'s temp file, chunk by chunk as they are produced
    (whoever holds the index still for this call need not hold it for the fsync);
    `stop()` is asked before each chunk (SnapshotStopped)."""
    parts = [a if not isinstance(a, np.ndarray) else np.ascontiguousarray(a) for a in arrays.values()]
    layout, offset = [], 0
    for name, part in zip(arrays, parts):
        dtype, shape = (part.dtype.str, list(part.shape)) if isinstance(part, np.ndarray) else ("|u1", [part.nbytes])
        layout.append({"name": name, "dtype": dtype, "shape": shape, "offset": offset, "nbytes": part.nbytes})
        offset += part.nbytes
    header = {**header, "key_slot": key.slot, "arrays": layout, "payload": offset, "chunk": CHUNK}
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            head = MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes
            sealer = _Sealer(out, key, hashlib.sha256(header_bytes).digest(), _chunk_count(offset), offset, stop)
            sealer.digest.update(head)
            out.write(head)
            for entry, part in zip(layout, parts):
                before = sealer.fed
                if isinstance(part, np.ndarray):
                    sealer.feed(part.reshape(-1).view(np.uint8))
                else:
                    part.write_to(sealer.feed)
                if sealer.fed - before != entry["nbytes"]:
                    raise RuntimeError(f"snapshot entry {entry['name']!r} wrote {sealer.fed - before} bytes, announced {entry['nbytes']}")
            sealer.close()
            out.write(sealer.digest.digest())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return StagedSnapshot(tmp, path)


class _Sealer:
    """Cuts what it is fed into CHUNK-sized pieces and writes each sealed.

    Two buffers, made once, carry every chunk: a new 16 MB object or two for each
    chunk, freed after it, is what made a 2M-face server's heap grow 2.2 GB over one
    snapshot written while searches allocated beside it (glibc serves them from the
    arenas once the first is freed and keeps the holes)."""

    def __init__(self, out, key: DataKey, aad_base: bytes, chunks: int, payload: int,
                 stop: Callable[[], bool]) -> None:
        self.out, self.key, self.aad_base, self.chunks, self.stop = out, key, aad_base, chunks, stop
        self.digest = hashlib.sha256()
        size = min(CHUNK, payload)
        self.plain, self.sealed_buffer = memoryview(bytearray(size)), bytearray(size + SEAL_OVERHEAD)
        self.held = self.sealed = self.fed = 0

    def feed(self, data) -> None:
        view = memoryview(data).cast("B")
        self.fed += len(view)
        pos = 0
        while pos < len(view):
            take = min(CHUNK - self.held, len(view) - pos)
            if self.held + take > len(self.plain):
                return  # more than the header announced: stage_snapshot names the entry
            self.plain[self.held : self.held + take] = view[pos : pos + take]
            self.held += take
            pos += take
            if self.held == CHUNK:
                self._seal()

    def close(self) -> None:
        if self.held or self.sealed < self.chunks:
            self._seal()

    def _seal(self) -> None:
        delay_point("snapshot:chunk", interrupt=self.stop)
        if self.stop():
            raise SnapshotStopped("the server is stopping: the snapshot in progress was left (the last one stays)")
        sealed = self.key.seal_into(self.plain[: self.held],
                                    _chunk_aad(self.aad_base, self.sealed, self.chunks), self.sealed_buffer)
        self.digest.update(sealed)
        self.out.write(sealed)
        self.sealed += 1
        self.held = 0


def read_header(path: Path) -> dict:
    """The header, after checking the whole file's checksum. Needs no key."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_bytes, digest = _read_head(f, path)
        remaining = size - f.tell() - 32
        if remaining < 0:
            raise DataCorruption(f"snapshot {path.name} is truncated")
        block = memoryview(bytearray(min(2**20, remaining)))
        while remaining > 0:
            got = f.readinto(block[: min(len(block), remaining)])
            digest.update(block[:got])
            remaining -= got
        if f.read(32) != digest.digest():
            raise DataCorruption(f"snapshot {path.name} failed its checksum (torn or corrupt write)")
    return json.loads(header_bytes)


Reader = Callable[[Callable[[int], bytes]], object]


def read_snapshot(path: Path, key: DataKey, readers: dict[str, Reader] | None = None) -> tuple[dict, dict[str, object]]:
    """(header, entries); raises DataCorruption if the file is torn, corrupt or not this key's.

    One pass: chunks are decrypted as they are read (each authenticated, bound to
    the header and its position) and the file checksum is checked at the end, before
    anything is returned. An entry named in `readers` is not read into an array: its
    reader consumes it from the stream (`read(n)` gives up to n bytes) and what it
    returns stands in its place, so a FAISS index is built without a copy of its bytes."""
    size = path.stat().st_size
    readers = readers or {}
    with open(path, "rb") as f:
        header_bytes, digest = _read_head(f, path)
        header = json.loads(header_bytes)
        total, chunk = int(header["payload"]), int(header["chunk"])
        if total < 0 or chunk <= 0:
            raise DataCorruption(f"snapshot {path.name} has a corrupt header")
        chunks = _chunk_count(total)
        expected = f.tell() + total + chunks * SEAL_OVERHEAD + 32
        if expected != size:
            raise DataCorruption(f"snapshot {path.name} is {size} bytes, expected {expected} (torn write)")
        stream = _Opener(f, key, hashlib.sha256(header_bytes).digest(), total, chunk, chunks, digest)
        entries = {}
        for entry in sorted(header["arrays"], key=lambda e: e["offset"]):
            if entry["offset"] != stream.position:
                raise DataCorruption(f"snapshot {path.name} has a corrupt layout")
            reader = readers.get(entry["name"])
            entries[entry["name"]] = stream.entry(entry, reader) if reader else \
                np.frombuffer(stream.exactly(entry["nbytes"]), dtype=np.dtype(entry["dtype"])).reshape(entry["shape"])
        if stream.position != total or f.read(32) != digest.digest():
            raise DataCorruption(f"snapshot {path.name} failed its checksum (torn or corrupt write)")
    return header, entries


class _Opener:
    """The snapshot's plaintext, decrypted one chunk at a time as it is read, through
    two buffers made once (see _Sealer)."""

    def __init__(self, f, key: DataKey, aad_base: bytes, total: int, chunk: int, chunks: int, digest) -> None:
        self.f, self.key, self.aad_base, self.total, self.chunk, self.chunks, self.digest = f, key, aad_base, total, chunk, chunks, digest
        size = min(chunk, total)
        self.sealed_buffer, self.plain_buffer = bytearray(size + SEAL_OVERHEAD), bytearray(size)
        self.next_chunk, self.plain, self.at, self.position = 0, memoryview(b""), 0, 0

    def read(self, n: int) -> bytes:
        if self.at == len(self.plain):
            if self.next_chunk == self.chunks:
                return b""
            plain_len = min(self.chunk, self.total - self.next_chunk * self.chunk)
            sealed = memoryview(self.sealed_buffer)[: plain_len + SEAL_OVERHEAD]
            if self.f.readinto(sealed) != len(sealed):
                raise DataCorruption("snapshot payload ends early")
            self.digest.update(sealed)
            aad = _chunk_aad(self.aad_base, self.next_chunk, self.chunks)
            self.plain, self.at = self.key.open_into(sealed, aad, self.plain_buffer), 0
            self.next_chunk += 1
        piece = bytes(self.plain[self.at : self.at + n])
        self.at += len(piece)
        self.position += len(piece)
        return piece

    def exactly(self, n: int) -> bytearray:
        out = bytearray(n)
        into, filled = memoryview(out), 0
        while filled < n:
            piece = self.read(n - filled)
            if not piece:
                raise DataCorruption("snapshot payload ends early")
            into[filled : filled + len(piece)] = piece
            filled += len(piece)
        return out

    def entry(self, entry: dict, reader: Reader) -> object:
        """Run `reader` over exactly this entry's bytes; a decryption failure inside it is
        raised as itself (not as the reader's own error about a short read)."""
        end, failed = self.position + entry["nbytes"], []

        def read(n: int) -> bytes:
            try:
                return self.read(min(n, end - self.position))
            except DataCorruption as err:
                failed.append(err)
                return b""

        try:
            out = reader(read)
        except Exception as err:
            if failed:
                raise failed[0] from None
            raise DataCorruption(f"snapshot entry {entry['name']!r} could not be read: {err}") from None
        if failed:
            raise failed[0]
        if self.position != end:
            raise DataCorruption(f"snapshot entry {entry['name']!r} was not read to its end")
        return out


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


def _chunk_aad(base: bytes, index: int, total: int) -> bytes:
    return base + struct.pack(">II", index, total)
