"""Embeddings packed losslessly before they are sealed, so that a catalog row fits in a page.

A 512-value float32 embedding sealed, with its row header and tag, is 2,108
bytes: a little over the 2,021 bytes LMDB keeps inside a 4 KB leaf page, so
each got an overflow page of its own (4,096 bytes, 86% of the catalog at 1M
faces). The values of a unit vector share a narrow range of exponents, so the
top byte of each float (sign and 7 exponent bits, about 2.6 bits of entropy)
is split into a plane of its own, as Blosc's shuffle does, and deflated to
under half; the other three bytes are mostly mantissa noise and are kept as
they are. About 1.78 KB is left at 512 values: two rows to a page.
Lossless: `unpack(pack(v))` is `v` bit for bit.

Rows written before hold the bare float32 values; `unpack` reads both. A packed
plaintext starts with a NaN's bit pattern, which a stored embedding (always
finite) never does; the seal authenticates the whole plaintext, marker included.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from facebank.errors import DataCorruption

MAGIC = b"\x46\x42\xc1\x7f"        # 0x7fc14246 little-endian: a quiet NaN as float32
_HEADER = struct.Struct("<4sHH")   # magic, values, bytes of the deflated top-byte plane
_LEVEL = 6


def pack(vector: np.ndarray) -> bytes:
    """The plaintext to seal for `vector` (finite float32 values): packed, or bare when packing saves nothing."""
    values = np.ascontiguousarray(vector, dtype="<f4")
    bare = values.tobytes()
    planes = values.view(np.uint8).reshape(-1, 4)
    squeezed = zlib.compress(planes[:, 3].tobytes(), _LEVEL, wbits=-15)
    if len(values) > 0xFFFF or _HEADER.size + len(squeezed) + 3 * len(values) >= len(bare):
        return bare
    return _HEADER.pack(MAGIC, len(values), len(squeezed)) + squeezed + planes[:, :3].tobytes()


def unpack(plain: bytes) -> np.ndarray:
    """The float32 embedding one plaintext holds, packed or bare (DataCorruption if it does not read)."""
    _, vectors, problems = unpack_rows([plain])
    if problems:
        raise DataCorruption(problems[0][1])
    return vectors[0]


def unpack_rows(plains: list[bytes], dim: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Many plaintexts at once: (which read, as a bool mask; their embeddings, one row each;
    (position, why) for each that did not). `dim` 0: as many values as the first row holds.
    Each packed row costs its decompression; the byte planes of all of them are put back
    together in one pass (a rebuild unpacks a million)."""
    dim = dim or (_values(plains[0]) if plains else 0)
    out = np.empty((len(plains), dim), "<f4")
    top = np.empty((len(plains), dim), np.uint8)
    rest = np.empty((len(plains), 3 * dim), np.uint8)
    read = np.zeros(len(plains), bool)
    packed = np.zeros(len(plains), bool)
    problems: list[tuple[int, str]] = []
    for i, plain in enumerate(plains):
        if plain[:4] != MAGIC:
            if len(plain) != 4 * dim:
                problems.append((i, f"{len(plain) // 4} values where the collection has {dim}"))
                continue
            out[i] = np.frombuffer(plain, "<f4")
        else:
            try:
                _, n, size = _HEADER.unpack_from(plain)
                high = zlib.decompress(memoryview(plain)[_HEADER.size:_HEADER.size + size], wbits=-15)
            except (struct.error, zlib.error) as exc:
                # authenticated, so only a writer's defect gets here; named like any damaged record
                problems.append((i, f"a packed embedding does not unpack ({exc})"))
                continue
            if n != dim or len(high) != n or len(plain) - _HEADER.size - size != 3 * n:
                problems.append((i, f"a packed embedding does not unpack ({n} values, {len(high)} top bytes, "
                                    f"{len(plain) - _HEADER.size - size} low bytes; the collection has {dim})"))
                continue
            top[i] = np.frombuffer(high, np.uint8)
            rest[i] = np.frombuffer(plain, np.uint8, offset=_HEADER.size + size)
            packed[i] = True
        read[i] = True
    planes = out.view(np.uint8).reshape(len(plains), dim, 4)
    if packed.all():
        planes[:, :, 3] = top
        planes[:, :, :3] = rest.reshape(len(plains), dim, 3)
    elif packed.any():
        planes[packed, :, 3] = top[packed]
        planes[packed, :, :3] = rest[packed].reshape(-1, dim, 3)
    return read, (out if read.all() else out[read]), problems


def _values(plain: bytes) -> int:
    return _HEADER.unpack_from(plain)[1] if plain[:4] == MAGIC and len(plain) >= _HEADER.size else len(plain) // 4
