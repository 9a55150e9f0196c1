"""Checks on every field a caller controls, with messages a person can act on.

Nothing here trusts a request: ids, names, metadata, numbers and embeddings
are checked before anything is read or stored. Each check raises
InvalidArgument with the field named and the rule stated. Text limits are in
bytes of UTF-8 (what storage pays for), and text is normalised to Unicode NFC,
so "é" typed either way is one identity.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

from facebank.errors import InvalidArgument, Reason

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ID_BYTES = 256             # identity ids (UTF-8)
MAX_NAME_BYTES = 512           # display names, API key names
MAX_METADATA_KEYS = 64         # per request; an identity holds at most 64 keys and 16 KiB in all
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 1024
MAX_TOP_K = 100
MAX_IMAGES_PER_ENROLL = 32
MAX_QUERIES = 1024
MAX_SOURCE_REF_BYTES = 4096
MAX_FACES_PER_IMAGE = 1000     # every face of a photo, up to this (a photo with more is refused, not cut)

# Format characters that hide or reorder text (zero-width space, BOM, bidi
# overrides). Joiners (U+200C, U+200D) stay allowed: real names use them.
_INVISIBLE = frozenset("\u200b\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def collection_name(name: str, field: str = "collection") -> str:
    if not name:
        return "default"
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"{field} {_show(name)} is not a valid name: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            reason=Reason.BAD_ID,
        )
    return name


def identity_id(value: str, field: str = "identity_id") -> str:
    if not value:
        raise InvalidArgument(f"{field} is empty; give the identity an id (e.g. an employee number or a name)", reason=Reason.BAD_ID)
    value = _text(value, field, MAX_ID_BYTES)
    if value != value.strip():
        raise InvalidArgument(f"{field} {_show(value)} starts or ends with whitespace; remove it", reason=Reason.BAD_ID)
    return value


def display_name(value: str, field: str = "display_name") -> str:
    return _text(value, field, MAX_NAME_BYTES) if value else value


def metadata(values: dict[str, str], field: str = "metadata") -> dict[str, str]:
    if len(values) > MAX_METADATA_KEYS:
        raise InvalidArgument(f"{field} has {len(values)} keys; at most {MAX_METADATA_KEYS} are allowed", reason=Reason.BAD_METADATA)
    out = {}
    for key, value in values.items():
        if not key:
            raise InvalidArgument(f"{field} has an empty key", reason=Reason.BAD_METADATA)
        key_nfc = _text(key, f"{field} key", MAX_METADATA_KEY_BYTES, reason=Reason.BAD_METADATA)
        out[key_nfc] = _text(value, f"{field}[{_show(key)}]", MAX_METADATA_VALUE_BYTES, reason=Reason.BAD_METADATA, allow_empty=True)
    return out


def metadata_keys(keys, field: str = "remove_metadata") -> list[str]:
    return [_text(k, f"{field} key", MAX_METADATA_KEY_BYTES, reason=Reason.BAD_METADATA) for k in keys]


def source_ref(value: str) -> str:
    return _text(value, "source_ref", MAX_SOURCE_REF_BYTES) if value else value


def top_k(value: int) -> int:
    if value == 0:
        return 5
    if not 1 <= value <= MAX_TOP_K:
        raise InvalidArgument(f"top_k is {value}; use 1 to {MAX_TOP_K}", reason=Reason.BAD_OPTION)
    return value


def threshold(value: float, field: str = "threshold") -> float:
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise InvalidArgument(f"{field} is {value}; a cosine similarity threshold lies between -1 and 1 (0.4 is typical)", reason=Reason.BAD_OPTION)
    return float(value)


def positive(value: int, field: str, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise InvalidArgument(f"{field} is {value}; use 0 to {maximum}", reason=Reason.BAD_OPTION)
    return value


def packed_embeddings(data: bytes, dim: int) -> np.ndarray:
    """Queries sent as one row-major little-endian float32 matrix; checked like `embeddings`."""
    row_bytes = 4 * dim
    if len(data) % row_bytes:
        raise InvalidArgument(
            f"queries_f32 holds {len(data)} bytes, not whole rows of {dim}-dimensional float32 embeddings "
            f"({row_bytes} bytes each) as this collection's model makes", reason=Reason.BAD_EMBEDDING,
        )
    return _unit_rows(np.frombuffer(data, dtype="<f4").reshape(-1, dim))


def embeddings(rows: list, dim: int) -> np.ndarray:
    """Query embeddings given value by value: the right size, finite, not zero; returned L2-normalised."""
    _query_count(len(rows))  # before any work on them
    for i, row in enumerate(rows):
        if len(row) != dim:
            raise InvalidArgument(
                f"query {i} has {len(row)} values; this collection's model makes {dim}-dimensional embeddings",
                reason=Reason.BAD_EMBEDDING,
            )
    return _unit_rows(np.array(rows, dtype=np.float64).reshape(len(rows), dim))


def _unit_rows(values: np.ndarray) -> np.ndarray:
    """A (n, dim) batch of queries: 1..MAX_QUERIES of them, finite, not zero; L2-normalised."""
    _query_count(len(values))
    values = values.astype(np.float64, copy=False)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise InvalidArgument(f"query {int(np.argmin(finite))} contains NaN or infinite values", reason=Reason.BAD_EMBEDDING)
    norms = np.linalg.norm(values, axis=1)
    if not np.isfinite(norms).all():
        raise InvalidArgument(f"query {int(np.argmin(np.isfinite(norms)))} has values too large to normalise", reason=Reason.BAD_EMBEDDING)
    if (norms < 1e-6).any():
        raise InvalidArgument(f"query {int(np.argmax(norms < 1e-6))} is all zeros (or too close to it) to have a direction", reason=Reason.BAD_EMBEDDING)
    return (values / norms[:, None]).astype(np.float32)


def _query_count(n: int) -> None:
    if n == 0:
        raise InvalidArgument("no query embeddings were given", reason=Reason.BAD_EMBEDDING)
    if n > MAX_QUERIES:
        raise InvalidArgument(f"{n} queries in one request; send at most {MAX_QUERIES}", reason=Reason.BAD_EMBEDDING)


def _text(value: str, field: str, limit: int, *, reason: str = Reason.BAD_ID, allow_empty: bool = False) -> str:
    """The text in NFC, once it passes: not empty (unless allowed), at most `limit` UTF-8 bytes, no control characters."""
    if not value and not allow_empty:
        raise InvalidArgument(f"{field} is empty", reason=reason)
    if len(value) > limit:  # cheap first: a character is at least one byte
        raise InvalidArgument(f"{field} is {len(value.encode(errors='replace')):,} bytes of UTF-8; the limit is {limit} bytes", reason=reason)
    value = unicodedata.normalize("NFC", value)
    size = len(value.encode(errors="replace"))
    if size > limit:
        raise InvalidArgument(f"{field} is {size:,} bytes of UTF-8; the limit is {limit} bytes", reason=reason)
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs", "Cn") or ch in _INVISIBLE:
            raise InvalidArgument(
                f"{field} {_show(value)} contains a control or invisible character (U+{ord(ch):04X}); remove it",
                reason=reason,
            )
    return value


def _show(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return repr(shown)
