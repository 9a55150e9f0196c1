"""A face record's stored form: fixed binary fields instead of JSON.

A face's JSON record spelled out its thirteen field names and printed each
coordinate as a 17-digit decimal: 411 bytes a face in the catalog at 1M
synthetic faces (the second table after the embeddings), more for real photos,
whose boxes and landmarks carry full-precision values. Here the numbers are
packed in place: the ids and times as 64-bit integers, the detection score,
and apart the box and landmarks, as float32 when each is a float32 value (the
detector's output always is; the transports carry them as float32), else as
float64, so a record always reads back as it was written. The image's SHA-256
is kept as its 32 bytes when it is lowercase hex. The quality dict the embedder
writes (its eight keys in their order) is kept as values; any other dict as
compact JSON. A face of a real photo took 713 bytes as JSON, 231 here (20 faces
of the test photos, `source_ref` a file name).

Rows written before are JSON and still read (they start with '{'; a binary row
starts with its format byte). A record that does not fit the fields (a string
over 64 KB, an id past 63 bits) is written as JSON.
"""

from __future__ import annotations

import json
import struct
from functools import lru_cache

from facebank.index.records import FaceRecord, dumps, loads

FORMAT = 1
_F64 = 1        # flag: the box and landmarks are float64
_F64_SCORE = 8  # flag: the detection score is float64
_RAW_SHA = 2    # flag: image_sha256 is lowercase hex, kept as its 32 bytes
_QUALITY_VALUES = 4  # flag: the quality dict is the embedder's, kept as its values
QUALITY_KEYS = ("passed", "reasons", "face_size", "detection_score", "sharpness", "yaw", "pitch", "roll")
_QUALITY = struct.Struct(">?6d")
# format, flags, face id, collection id, iid, created ms, key slot, cluster id, box values, landmark points
_HEAD = struct.Struct(">BBqIqqqqBB")
_LEN = struct.Struct(">H")


@lru_cache(maxsize=64)
def _floats(count: int, wide: bool) -> struct.Struct:
    return struct.Struct(f">{count}{'d' if wide else 'f'}")


def _is_float32(values: list[float]) -> bool:
    narrow = _floats(len(values), False)
    try:
        return narrow.unpack(narrow.pack(*values)) == tuple(values)
    except OverflowError:   # past float32's range
        return False


def _text(value: str) -> bytes:
    raw = value.encode()
    return _LEN.pack(len(raw)) + raw


def _quality_values(quality: dict) -> bytes | None:
    """The embedder's quality dict as values, or None for any other dict."""
    if tuple(quality) != QUALITY_KEYS or type(quality["passed"]) is not bool or type(quality["reasons"]) is not list \
            or not all(type(r) is str for r in quality["reasons"]) or not all(type(quality[k]) is float for k in QUALITY_KEYS[2:]):
        return None
    reasons = json.dumps(quality["reasons"], separators=(",", ":"), ensure_ascii=False).encode()
    return _QUALITY.pack(quality["passed"], *(quality[k] for k in QUALITY_KEYS[2:])) + reasons


def encode_face(rec: FaceRecord) -> bytes:
    """The bytes stored for `rec` (binary, or JSON for a record the fields cannot hold)."""
    score, sha = rec.detection_score, rec.image_sha256
    floats = [*rec.box] + [v for point in rec.landmarks for v in point]
    if len(rec.box) > 255 or len(rec.landmarks) > 255 or any(len(point) != 2 for point in rec.landmarks) \
            or not all(type(v) is float for v in (score, *floats)):   # an int would come back a float
        return dumps(rec)
    wide, wide_score = not _is_float32(floats), not _is_float32([score])
    raw_sha = len(sha) == 64 and sha == sha.lower() and all(c in "0123456789abcdef" for c in sha)
    quality = _quality_values(rec.quality)
    flags = (_F64 if wide else 0) | (_F64_SCORE if wide_score else 0) | (_RAW_SHA if raw_sha else 0) \
        | (_QUALITY_VALUES if quality is not None else 0)
    try:
        head = _HEAD.pack(FORMAT, flags, rec.face_id, rec.collection_id, rec.iid, rec.created_ms, rec.key_slot,
                          rec.cluster_id, len(rec.box), len(rec.landmarks))
        texts = (bytes.fromhex(sha) if raw_sha else _text(sha)) + _text(rec.source_ref) + _text(rec.model_id)
    except (struct.error, UnicodeEncodeError):   # an id past 63 bits, a text past 64 KB
        return dumps(rec)
    if quality is None:
        quality = json.dumps(rec.quality, separators=(",", ":"), ensure_ascii=False).encode()
    return b"".join((head, _floats(1, wide_score).pack(score), _floats(len(floats), wide).pack(*floats), texts, quality))


def decode_face(raw: bytes) -> FaceRecord:
    """The record stored as `raw` (binary or JSON); ValueError when it is neither."""
    if raw[:1] == b"{":
        return loads(FaceRecord, raw)
    try:
        fmt, flags, face_id, cid, iid, created, slot, cluster, n_box, n_marks = _HEAD.unpack_from(raw)
        if fmt != FORMAT:
            raise ValueError(f"face record format {fmt} is not one this version reads")
        score_field, floats = _floats(1, bool(flags & _F64_SCORE)), _floats(n_box + 2 * n_marks, bool(flags & _F64))
        (score,) = score_field.unpack_from(raw, _HEAD.size)
        values = floats.unpack_from(raw, _HEAD.size + score_field.size)
        at = _HEAD.size + score_field.size + floats.size
        if flags & _RAW_SHA:
            if len(raw) < at + 32:
                raise struct.error("the image hash runs past the record")
            sha, at = raw[at:at + 32].hex(), at + 32
        else:
            sha, at = _read_text(raw, at)
        source_ref, at = _read_text(raw, at)
        model_id, at = _read_text(raw, at)
        if flags & _QUALITY_VALUES:
            passed, *measures = _QUALITY.unpack_from(raw, at)
            quality = dict(zip(QUALITY_KEYS, (passed, json.loads(raw[at + _QUALITY.size:]), *measures)))
        else:
            quality = json.loads(raw[at:])
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"a face record that does not decode: {e}") from None
    marks = values[n_box:]
    return FaceRecord(face_id, cid, iid, list(values[:n_box]), [[marks[i], marks[i + 1]] for i in range(0, len(marks), 2)],
                      score, quality, sha, source_ref, model_id, created, slot, cluster)


def _read_text(raw: bytes, at: int) -> tuple[str, int]:
    (n,) = _LEN.unpack_from(raw, at)
    end = at + _LEN.size + n
    if end > len(raw):
        raise struct.error("a text field runs past the record")
    return raw[at + _LEN.size:end].decode(), end
