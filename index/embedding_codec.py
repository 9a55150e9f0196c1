"""Embeddings packed losslessly before they are sealed, so that a catalog row fits in a page.

A 512-value float32 embedding sealed, with its row header and tag, is 2,108
bytes: a little over the 2,021 bytes LMDB keeps inside a 4 KB leaf page, so
each got an overflow page of its own (4,096 bytes, 86% of the catalog at 1M
faces). The values of a unit vector share a narrow range of exponents, so the
top byte of each float (sign and 7 exponent bits, about 2.6 bits of entropy)
is split into a plane of its own, as Blosc's shuffle does, and deflated to
under half; the other three bytes are mostly mantissa noise and are kept as
they are. About 1.78 KB is left at 512 values: two rows to a page. Lossless: `unpack(pack(v))` is `v` bit for bit.

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
    """The float32 embedding a plaintext holds (read-only), packed or bare."""
    if plain[:4] != MAGIC:
        return np.frombuffer(plain, dtype="<f4")
    try:
        _, n, size = _HEADER.unpack_from(plain)
        body = memoryview(plain)[_HEADER.size:]
        top = np.frombuffer(zlib.decompress(body[:size], wbits=-15), np.uint8)
        low = np.frombuffer(body[size:], np.uint8)
        if len(top) != n or len(low) != 3 * n:
            raise ValueError(f"{len(top)} top bytes and {len(low)} low bytes for {n} values")
    except (struct.error, zlib.error, ValueError) as exc:
        # authenticated, so only a writer's defect gets here; named like any damaged record
        raise DataCorruption(f"a packed embedding does not unpack ({exc})") from exc
    planes = np.empty((n, 4), np.uint8)
    planes[:, 3] = top
    planes[:, :3] = low.reshape(n, 3)
    return planes.reshape(-1).view("<f4")
