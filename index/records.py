"""Catalog records and their stored form.

Records are stored as compact JSON (never pickle). Embeddings are not part of
any record: they live apart, sealed under their subject's data key, so a record
can be read, listed and compacted without touching biometric data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

ENROLLED = "enrolled"   # segment searched by 1:N search
INGESTED = "ingested"   # segment of faces not enrolled to an identity (clustering)
SEGMENTS = (ENROLLED, INGESTED)

INDEX_KINDS = ("auto", "flat", "ivf", "ivf_sq8", "hnsw")

# What one identity may hold, whatever the number of calls that grew it.
MAX_IDENTITY_METADATA_KEYS = 64
MAX_IDENTITY_METADATA_BYTES = 16 * 1024


def dumps(record: object) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=False).encode()


_FIELDS: dict[type, frozenset[str]] = {}


def loads(cls: type, raw: bytes):
    """A record from its JSON; fields a newer version added are ignored."""
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    data = json.loads(raw)
    if data.keys() <= known:
        return cls(**data)
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class IndexSettings:
    kind: str = "auto"     # auto | flat | ivf | hnsw
    nprobe: int = 0        # 0 = chosen from nlist
    ef_search: int = 0     # 0 = default


@dataclass
class CollectionRecord:
    id: int
    name: str
    model_id: str
    dim: int
    threshold: float
    created_ms: int
    index: dict = field(default_factory=lambda: asdict(IndexSettings()))
    scratch_lease_s: int = 0   # > 0: a scratch collection, dropped when unused this long and at every start
    keep_crops: bool = True    # keep each face's aligned crop, sealed like its embedding (review, model migration)

    @property
    def index_settings(self) -> IndexSettings:
        return IndexSettings(**self.index)


@dataclass
class IdentityRecord:
    iid: int                 # internal id, never reused
    collection_id: int
    external_id: str
    display_name: str
    metadata: dict[str, str]
    key_slot: int            # data key sealing this identity's embeddings
    created_ms: int
    face_count: int = 0
    cluster_id: int = 0      # the cluster that names this identity, if any


@dataclass
class FaceRecord:
    face_id: int
    collection_id: int
    iid: int                 # 0 = not enrolled (ingested)
    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    quality: dict
    image_sha256: str
    source_ref: str
    model_id: str
    created_ms: int
    key_slot: int            # the identity's slot, or the face's own while ingested
    cluster_id: int = 0

    @property
    def segment(self) -> str:
        return ENROLLED if self.iid else INGESTED


@dataclass
class ClusterRecord:
    cluster_id: int
    collection_id: int
    iid: int = 0                 # set once named
    size: int = 0
    representatives: list[int] = field(default_factory=list)
    locked: bool = False         # edited by a person: kept as is by re-clustering
    created_ms: int = 0


@dataclass
class ForgetIntent:
    """Written before a forget shreds anything; a restart finishes what it started."""

    iid: int
    collection_id: int
    subject_hash: str
    key_slots: list[int]
    face_ids: list[int]
    time_ms: int = 0


@dataclass
class ApiKeyRecord:
    key_id: str
    name: str
    role: str
    collections: list[str]
    secret_sha256: str
    created_ms: int
