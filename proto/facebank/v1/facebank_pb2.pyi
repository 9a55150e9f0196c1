from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QualityFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_FILTER_DEFAULT: _ClassVar[QualityFilter]
    QUALITY_FILTER_NONE: _ClassVar[QualityFilter]

class IndexKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_KIND_AUTO: _ClassVar[IndexKind]
    INDEX_KIND_FLAT: _ClassVar[IndexKind]
    INDEX_KIND_IVF: _ClassVar[IndexKind]
    INDEX_KIND_HNSW: _ClassVar[IndexKind]
    INDEX_KIND_MILVUS: _ClassVar[IndexKind]
    INDEX_KIND_IVF_SQ8: _ClassVar[IndexKind]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SEARCH: _ClassVar[Role]
    ROLE_ENROLL: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
QUALITY_FILTER_DEFAULT: QualityFilter
QUALITY_FILTER_NONE: QualityFilter
INDEX_KIND_AUTO: IndexKind
INDEX_KIND_FLAT: IndexKind
INDEX_KIND_IVF: IndexKind
INDEX_KIND_HNSW: IndexKind
INDEX_KIND_MILVUS: IndexKind
INDEX_KIND_IVF_SQ8: IndexKind
ROLE_UNSPECIFIED: Role
ROLE_SEARCH: Role
ROLE_ENROLL: Role
ROLE_ADMIN: Role

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("passed", "reasons", "face_size", "detection_score", "sharpness", "yaw", "pitch", "roll")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    face_size: float
    detection_score: float
    sharpness: float
    yaw: float
    pitch: float
    roll: float
    def __init__(self, passed: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., face_size: _Optional[float] = ..., detection_score: _Optional[float] = ..., sharpness: _Optional[float] = ..., yaw: _Optional[float] = ..., pitch: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("box", "landmarks", "detection_score", "quality")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    box: Box
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    detection_score: float
    quality: Quality
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., detection_score: _Optional[float] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "source_ref")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    source_ref: str
    def __init__(self, data: _Optional[bytes] = ..., source_ref: _Optional[str] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("face_id", "identity_id", "detection", "image_sha256", "source_ref", "model_id", "created_ms", "cluster_id", "crop")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    identity_id: str
    detection: DetectedFace
    image_sha256: str
    source_ref: str
    model_id: str
    created_ms: int
    cluster_id: int
    crop: bytes
    def __init__(self, face_id: _Optional[int] = ..., identity_id: _Optional[str] = ..., detection: _Optional[_Union[DetectedFace, _Mapping]] = ..., image_sha256: _Optional[str] = ..., source_ref: _Optional[str] = ..., model_id: _Optional[str] = ..., created_ms: _Optional[int] = ..., cluster_id: _Optional[int] = ..., crop: _Optional[bytes] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    message: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class IndexOptions(_message.Message):
    __slots__ = ("kind", "nprobe", "ef_search")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    kind: IndexKind
    nprobe: int
    ef_search: int
    def __init__(self, kind: _Optional[_Union[IndexKind, str]] = ..., nprobe: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class CollectionStats(_message.Message):
    __slots__ = ("identities", "faces", "indexed", "unassigned", "clusters", "active_index", "index_generation", "catalog_seq", "snapshot_seq", "retrain_pending", "nprobe", "calibrated_recall")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    UNASSIGNED_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SEQ_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_PENDING_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_RECALL_FIELD_NUMBER: _ClassVar[int]
    identities: int
    faces: int
    indexed: int
    unassigned: int
    clusters: int
    active_index: IndexKind
    index_generation: int
    catalog_seq: int
    snapshot_seq: int
    retrain_pending: bool
    nprobe: int
    calibrated_recall: float
    def __init__(self, identities: _Optional[int] = ..., faces: _Optional[int] = ..., indexed: _Optional[int] = ..., unassigned: _Optional[int] = ..., clusters: _Optional[int] = ..., active_index: _Optional[_Union[IndexKind, str]] = ..., index_generation: _Optional[int] = ..., catalog_seq: _Optional[int] = ..., snapshot_seq: _Optional[int] = ..., retrain_pending: _Optional[bool] = ..., nprobe: _Optional[int] = ..., calibrated_recall: _Optional[float] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "model_id", "embedding_dim", "index", "threshold", "created_ms", "stats", "scratch_lease_seconds", "keep_crops")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    SCRATCH_LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_CROPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_id: str
    embedding_dim: int
    index: IndexOptions
    threshold: float
    created_ms: int
    stats: CollectionStats
    scratch_lease_seconds: int
    keep_crops: bool
    def __init__(self, name: _Optional[str] = ..., model_id: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., index: _Optional[_Union[IndexOptions, _Mapping]] = ..., threshold: _Optional[float] = ..., created_ms: _Optional[int] = ..., stats: _Optional[_Union[CollectionStats, _Mapping]] = ..., scratch_lease_seconds: _Optional[int] = ..., keep_crops: _Optional[bool] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "index", "threshold", "scratch_lease_seconds", "keep_crops")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SCRATCH_LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_CROPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    index: IndexOptions
    threshold: float
    scratch_lease_seconds: int
    keep_crops: bool
    def __init__(self, name: _Optional[str] = ..., index: _Optional[_Union[IndexOptions, _Mapping]] = ..., threshold: _Optional[float] = ..., scratch_lease_seconds: _Optional[int] = ..., keep_crops: _Optional[bool] = ...) -> None: ...

class UpdateCollectionRequest(_message.Message):
    __slots__ = ("name", "threshold", "index", "keep_crops")
    NAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEEP_CROPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    threshold: float
    index: IndexOptions
    keep_crops: bool
    def __init__(self, name: _Optional[str] = ..., threshold: _Optional[float] = ..., index: _Optional[_Union[IndexOptions, _Mapping]] = ..., keep_crops: _Optional[bool] = ...) -> None: ...

class CollectionRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("identities_forgotten", "faces_removed")
    IDENTITIES_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    FACES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    identities_forgotten: int
    faces_removed: int
    def __init__(self, identities_forgotten: _Optional[int] = ..., faces_removed: _Optional[int] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("id", "display_name", "metadata", "created_ms", "face_count", "faces")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    metadata: _containers.ScalarMap[str, str]
    created_ms: int
    face_count: int
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_ms: _Optional[int] = ..., face_count: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("collection", "identity_id", "display_name", "metadata", "images", "quality_filter")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    identity_id: str
    display_name: str
    metadata: _containers.ScalarMap[str, str]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    quality_filter: QualityFilter
    def __init__(self, collection: _Optional[str] = ..., identity_id: _Optional[str] = ..., display_name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., quality_filter: _Optional[_Union[QualityFilter, str]] = ...) -> None: ...

class EnrolledImage(_message.Message):
    __slots__ = ("face", "already_enrolled")
    FACE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ENROLLED_FIELD_NUMBER: _ClassVar[int]
    face: Face
    already_enrolled: bool
    def __init__(self, face: _Optional[_Union[Face, _Mapping]] = ..., already_enrolled: _Optional[bool] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("identity", "images")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    images: _containers.RepeatedCompositeFieldContainer[EnrolledImage]
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., images: _Optional[_Iterable[_Union[EnrolledImage, _Mapping]]] = ...) -> None: ...

class BulkEnrollItem(_message.Message):
    __slots__ = ("item_id", "collection", "identity_id", "display_name", "metadata", "image", "quality_filter")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FILTER_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    collection: str
    identity_id: str
    display_name: str
    metadata: _containers.ScalarMap[str, str]
    image: Image
    quality_filter: QualityFilter
    def __init__(self, item_id: _Optional[str] = ..., collection: _Optional[str] = ..., identity_id: _Optional[str] = ..., display_name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., quality_filter: _Optional[_Union[QualityFilter, str]] = ...) -> None: ...

class BulkEnrollResult(_message.Message):
    __slots__ = ("item_id", "enrolled", "failure")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    enrolled: EnrolledImage
    failure: Failure
    def __init__(self, item_id: _Optional[str] = ..., enrolled: _Optional[_Union[EnrolledImage, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("top_k", "threshold", "filter")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    threshold: float
    filter: _containers.ScalarMap[str, str]
    def __init__(self, top_k: _Optional[int] = ..., threshold: _Optional[float] = ..., filter: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IdentityMatch(_message.Message):
    __slots__ = ("identity_id", "display_name", "score", "face_ids", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    identity_id: str
    display_name: str
    score: float
    face_ids: _containers.RepeatedScalarFieldContainer[int]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, identity_id: _Optional[str] = ..., display_name: _Optional[str] = ..., score: _Optional[float] = ..., face_ids: _Optional[_Iterable[int]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FaceSearchResult(_message.Message):
    __slots__ = ("face", "matches")
    FACE_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    face: DetectedFace
    matches: _containers.RepeatedCompositeFieldContainer[IdentityMatch]
    def __init__(self, face: _Optional[_Union[DetectedFace, _Mapping]] = ..., matches: _Optional[_Iterable[_Union[IdentityMatch, _Mapping]]] = ...) -> None: ...

class SearchByImageRequest(_message.Message):
    __slots__ = ("collection", "image", "options", "max_faces", "quality_filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: Image
    options: SearchOptions
    max_faces: int
    quality_filter: QualityFilter
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., max_faces: _Optional[int] = ..., quality_filter: _Optional[_Union[QualityFilter, str]] = ...) -> None: ...

class SearchByImageResponse(_message.Message):
    __slots__ = ("faces", "threshold", "faces_below_quality")
    FACES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FACES_BELOW_QUALITY_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[FaceSearchResult]
    threshold: float
    faces_below_quality: int
    def __init__(self, faces: _Optional[_Iterable[_Union[FaceSearchResult, _Mapping]]] = ..., threshold: _Optional[float] = ..., faces_below_quality: _Optional[int] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchByEmbeddingRequest(_message.Message):
    __slots__ = ("collection", "queries", "options", "queries_f32", "packed_answer")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_F32_FIELD_NUMBER: _ClassVar[int]
    PACKED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Embedding]
    options: SearchOptions
    queries_f32: bytes
    packed_answer: bool
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., queries_f32: _Optional[bytes] = ..., packed_answer: _Optional[bool] = ...) -> None: ...

class MatchList(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[IdentityMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[IdentityMatch, _Mapping]]] = ...) -> None: ...

class PackedMatches(_message.Message):
    __slots__ = ("top_k", "identity_ids", "display_names", "identities_i32", "scores_f32", "face_counts_u32", "face_ids_u64")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAMES_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_I32_FIELD_NUMBER: _ClassVar[int]
    SCORES_F32_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNTS_U32_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_U64_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    identity_ids: _containers.RepeatedScalarFieldContainer[str]
    display_names: _containers.RepeatedScalarFieldContainer[str]
    identities_i32: bytes
    scores_f32: bytes
    face_counts_u32: bytes
    face_ids_u64: bytes
    def __init__(self, top_k: _Optional[int] = ..., identity_ids: _Optional[_Iterable[str]] = ..., display_names: _Optional[_Iterable[str]] = ..., identities_i32: _Optional[bytes] = ..., scores_f32: _Optional[bytes] = ..., face_counts_u32: _Optional[bytes] = ..., face_ids_u64: _Optional[bytes] = ...) -> None: ...

class SearchByEmbeddingResponse(_message.Message):
    __slots__ = ("results", "threshold", "packed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[MatchList]
    threshold: float
    packed: PackedMatches
    def __init__(self, results: _Optional[_Iterable[_Union[MatchList, _Mapping]]] = ..., threshold: _Optional[float] = ..., packed: _Optional[_Union[PackedMatches, _Mapping]] = ...) -> None: ...

class DetectFacesRequest(_message.Message):
    __slots__ = ("collection", "image", "max_faces")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: Image
    max_faces: int
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., max_faces: _Optional[int] = ...) -> None: ...

class DetectFacesResponse(_message.Message):
    __slots__ = ("faces",)
    FACES_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[DetectedFace]
    def __init__(self, faces: _Optional[_Iterable[_Union[DetectedFace, _Mapping]]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("collection", "image", "face", "other_face", "other_image", "identity_id", "face_id", "threshold")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FACE_FIELD_NUMBER: _ClassVar[int]
    OTHER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: Image
    face: int
    other_face: int
    other_image: Image
    identity_id: str
    face_id: int
    threshold: float
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., face: _Optional[int] = ..., other_face: _Optional[int] = ..., other_image: _Optional[_Union[Image, _Mapping]] = ..., identity_id: _Optional[str] = ..., face_id: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("match", "score", "threshold", "face", "other_face", "faces_in_image", "face_used", "faces_in_other_image", "other_face_used")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FACE_FIELD_NUMBER: _ClassVar[int]
    FACES_IN_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACE_USED_FIELD_NUMBER: _ClassVar[int]
    FACES_IN_OTHER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FACE_USED_FIELD_NUMBER: _ClassVar[int]
    match: bool
    score: float
    threshold: float
    face: DetectedFace
    other_face: DetectedFace
    faces_in_image: int
    face_used: int
    faces_in_other_image: int
    other_face_used: int
    def __init__(self, match: _Optional[bool] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., face: _Optional[_Union[DetectedFace, _Mapping]] = ..., other_face: _Optional[_Union[DetectedFace, _Mapping]] = ..., faces_in_image: _Optional[int] = ..., face_used: _Optional[int] = ..., faces_in_other_image: _Optional[int] = ..., other_face_used: _Optional[int] = ...) -> None: ...

class CreateIdentityRequest(_message.Message):
    __slots__ = ("collection", "identity_id", "display_name", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    collection: str
    identity_id: str
    display_name: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, collection: _Optional[str] = ..., identity_id: _Optional[str] = ..., display_name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IdentityRef(_message.Message):
    __slots__ = ("collection", "identity_id", "with_crops")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_CROPS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    identity_id: str
    with_crops: bool
    def __init__(self, collection: _Optional[str] = ..., identity_id: _Optional[str] = ..., with_crops: _Optional[bool] = ...) -> None: ...

class ListIdentitiesRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token", "with_crops")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WITH_CROPS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    with_crops: bool
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., with_crops: _Optional[bool] = ...) -> None: ...

class ListIdentitiesResponse(_message.Message):
    __slots__ = ("identities", "next_page_token")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    next_page_token: str
    def __init__(self, identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateIdentityRequest(_message.Message):
    __slots__ = ("collection", "identity_id", "display_name", "set_metadata", "remove_metadata")
    class SetMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SET_METADATA_FIELD_NUMBER: _ClassVar[int]
    REMOVE_METADATA_FIELD_NUMBER: _ClassVar[int]
    collection: str
    identity_id: str
    display_name: str
    set_metadata: _containers.ScalarMap[str, str]
    remove_metadata: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., identity_id: _Optional[str] = ..., display_name: _Optional[str] = ..., set_metadata: _Optional[_Mapping[str, str]] = ..., remove_metadata: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteFaceRequest(_message.Message):
    __slots__ = ("collection", "face_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    face_id: int
    def __init__(self, collection: _Optional[str] = ..., face_id: _Optional[int] = ...) -> None: ...

class DeleteFaceResponse(_message.Message):
    __slots__ = ("face",)
    FACE_FIELD_NUMBER: _ClassVar[int]
    face: Face
    def __init__(self, face: _Optional[_Union[Face, _Mapping]] = ...) -> None: ...

class FaceRef(_message.Message):
    __slots__ = ("collection", "face_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    face_id: int
    def __init__(self, collection: _Optional[str] = ..., face_id: _Optional[int] = ...) -> None: ...

class FaceCrop(_message.Message):
    __slots__ = ("face", "image", "media_type")
    FACE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    face: Face
    image: bytes
    media_type: str
    def __init__(self, face: _Optional[_Union[Face, _Mapping]] = ..., image: _Optional[bytes] = ..., media_type: _Optional[str] = ...) -> None: ...

class ForgetRequest(_message.Message):
    __slots__ = ("collection", "identity_id", "strict")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    identity_id: str
    strict: bool
    def __init__(self, collection: _Optional[str] = ..., identity_id: _Optional[str] = ..., strict: _Optional[bool] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("probes", "max_score", "threshold", "passed", "method", "face_ids", "returned", "in_index")
    PROBES_FIELD_NUMBER: _ClassVar[int]
    MAX_SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    IN_INDEX_FIELD_NUMBER: _ClassVar[int]
    probes: int
    max_score: float
    threshold: float
    passed: bool
    method: str
    face_ids: int
    returned: int
    in_index: int
    def __init__(self, probes: _Optional[int] = ..., max_score: _Optional[float] = ..., threshold: _Optional[float] = ..., passed: _Optional[bool] = ..., method: _Optional[str] = ..., face_ids: _Optional[int] = ..., returned: _Optional[int] = ..., in_index: _Optional[int] = ...) -> None: ...

class ForgetReceipt(_message.Message):
    __slots__ = ("sequence", "time_ms", "collection", "subject_hash", "removed", "generation_before", "generation_after", "derived_clean", "snapshot_rewritten", "verification", "prev_hash", "hash", "note", "kind", "key_id", "signature", "index_removal_pending")
    class RemovedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_HASH_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_BEFORE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_AFTER_FIELD_NUMBER: _ClassVar[int]
    DERIVED_CLEAN_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_REWRITTEN_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    INDEX_REMOVAL_PENDING_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time_ms: int
    collection: str
    subject_hash: str
    removed: _containers.ScalarMap[str, int]
    generation_before: int
    generation_after: int
    derived_clean: bool
    snapshot_rewritten: bool
    verification: Verification
    prev_hash: str
    hash: str
    note: str
    kind: str
    key_id: str
    signature: str
    index_removal_pending: bool
    def __init__(self, sequence: _Optional[int] = ..., time_ms: _Optional[int] = ..., collection: _Optional[str] = ..., subject_hash: _Optional[str] = ..., removed: _Optional[_Mapping[str, int]] = ..., generation_before: _Optional[int] = ..., generation_after: _Optional[int] = ..., derived_clean: _Optional[bool] = ..., snapshot_rewritten: _Optional[bool] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., note: _Optional[str] = ..., kind: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ..., index_removal_pending: _Optional[bool] = ...) -> None: ...

class IngestItem(_message.Message):
    __slots__ = ("item_id", "collection", "image")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    collection: str
    image: Image
    def __init__(self, item_id: _Optional[str] = ..., collection: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("item_id", "faces", "already_ingested", "failure")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_INGESTED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    already_ingested: bool
    failure: Failure
    def __init__(self, item_id: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., already_ingested: _Optional[bool] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class ClusterRequest(_message.Message):
    __slots__ = ("collection", "full")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    full: bool
    def __init__(self, collection: _Optional[str] = ..., full: _Optional[bool] = ...) -> None: ...

class ClusteringSummary(_message.Message):
    __slots__ = ("clusters", "new_clusters", "assigned", "unclustered", "cannot_link_splits")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NEW_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    UNCLUSTERED_FIELD_NUMBER: _ClassVar[int]
    CANNOT_LINK_SPLITS_FIELD_NUMBER: _ClassVar[int]
    clusters: int
    new_clusters: int
    assigned: int
    unclustered: int
    cannot_link_splits: int
    def __init__(self, clusters: _Optional[int] = ..., new_clusters: _Optional[int] = ..., assigned: _Optional[int] = ..., unclustered: _Optional[int] = ..., cannot_link_splits: _Optional[int] = ...) -> None: ...

class ClusterProgress(_message.Message):
    __slots__ = ("stage", "done", "total", "summary")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    summary: ClusteringSummary
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., summary: _Optional[_Union[ClusteringSummary, _Mapping]] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("cluster_id", "identity_id", "size", "representatives", "faces")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATIVES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    identity_id: str
    size: int
    representatives: _containers.RepeatedScalarFieldContainer[int]
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    def __init__(self, cluster_id: _Optional[int] = ..., identity_id: _Optional[str] = ..., size: _Optional[int] = ..., representatives: _Optional[_Iterable[int]] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ...) -> None: ...

class ListClustersRequest(_message.Message):
    __slots__ = ("collection", "include_faces", "with_crops", "unclustered_only", "suggest")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FACES_FIELD_NUMBER: _ClassVar[int]
    WITH_CROPS_FIELD_NUMBER: _ClassVar[int]
    UNCLUSTERED_ONLY_FIELD_NUMBER: _ClassVar[int]
    SUGGEST_FIELD_NUMBER: _ClassVar[int]
    collection: str
    include_faces: bool
    with_crops: bool
    unclustered_only: bool
    suggest: bool
    def __init__(self, collection: _Optional[str] = ..., include_faces: _Optional[bool] = ..., with_crops: _Optional[bool] = ..., unclustered_only: _Optional[bool] = ..., suggest: _Optional[bool] = ...) -> None: ...

class FaceSuggestion(_message.Message):
    __slots__ = ("face_id", "identity_id", "display_name", "score", "cluster_id")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    identity_id: str
    display_name: str
    score: float
    cluster_id: int
    def __init__(self, face_id: _Optional[int] = ..., identity_id: _Optional[str] = ..., display_name: _Optional[str] = ..., score: _Optional[float] = ..., cluster_id: _Optional[int] = ...) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters", "unclustered", "suggestions")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    UNCLUSTERED_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    unclustered: _containers.RepeatedCompositeFieldContainer[Face]
    suggestions: _containers.RepeatedCompositeFieldContainer[FaceSuggestion]
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ..., unclustered: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., suggestions: _Optional[_Iterable[_Union[FaceSuggestion, _Mapping]]] = ...) -> None: ...

class MergeClustersRequest(_message.Message):
    __slots__ = ("collection", "into", "others")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INTO_FIELD_NUMBER: _ClassVar[int]
    OTHERS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    into: int
    others: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, collection: _Optional[str] = ..., into: _Optional[int] = ..., others: _Optional[_Iterable[int]] = ...) -> None: ...

class SplitClusterRequest(_message.Message):
    __slots__ = ("collection", "cluster_id", "face_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    cluster_id: int
    face_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, collection: _Optional[str] = ..., cluster_id: _Optional[int] = ..., face_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class MoveFacesRequest(_message.Message):
    __slots__ = ("collection", "into", "face_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INTO_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    into: int
    face_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, collection: _Optional[str] = ..., into: _Optional[int] = ..., face_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class NameClusterRequest(_message.Message):
    __slots__ = ("collection", "cluster_id", "identity_id", "display_name")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    collection: str
    cluster_id: int
    identity_id: str
    display_name: str
    def __init__(self, collection: _Optional[str] = ..., cluster_id: _Optional[int] = ..., identity_id: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class ClusterRef(_message.Message):
    __slots__ = ("collection", "cluster_id", "with_crops")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_CROPS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    cluster_id: int
    with_crops: bool
    def __init__(self, collection: _Optional[str] = ..., cluster_id: _Optional[int] = ..., with_crops: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("collections", "model_id", "device", "data_bytes", "pending_retrains", "maintenance_error", "damaged_records", "index_changes_pending")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    PENDING_RETRAINS_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_ERROR_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    INDEX_CHANGES_PENDING_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    model_id: str
    device: str
    data_bytes: int
    pending_retrains: int
    maintenance_error: str
    damaged_records: int
    index_changes_pending: int
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., model_id: _Optional[str] = ..., device: _Optional[str] = ..., data_bytes: _Optional[int] = ..., pending_retrains: _Optional[int] = ..., maintenance_error: _Optional[str] = ..., damaged_records: _Optional[int] = ..., index_changes_pending: _Optional[int] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("bytes_before", "bytes_after")
    BYTES_BEFORE_FIELD_NUMBER: _ClassVar[int]
    BYTES_AFTER_FIELD_NUMBER: _ClassVar[int]
    bytes_before: int
    bytes_after: int
    def __init__(self, bytes_before: _Optional[int] = ..., bytes_after: _Optional[int] = ...) -> None: ...

class ListReceiptsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReceiptsResponse(_message.Message):
    __slots__ = ("receipts", "chain_valid", "chain_error")
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VALID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ERROR_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[ForgetReceipt]
    chain_valid: bool
    chain_error: str
    def __init__(self, receipts: _Optional[_Iterable[_Union[ForgetReceipt, _Mapping]]] = ..., chain_valid: _Optional[bool] = ..., chain_error: _Optional[str] = ...) -> None: ...

class ReceiptKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReceiptKeyResponse(_message.Message):
    __slots__ = ("public_key_pem", "key_id")
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    public_key_pem: str
    key_id: str
    def __init__(self, public_key_pem: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class CheckCatalogRequest(_message.Message):
    __slots__ = ("quarantine",)
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    quarantine: bool
    def __init__(self, quarantine: _Optional[bool] = ...) -> None: ...

class DamagedRecord(_message.Message):
    __slots__ = ("table", "key", "problem")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: str
    problem: str
    def __init__(self, table: _Optional[str] = ..., key: _Optional[str] = ..., problem: _Optional[str] = ...) -> None: ...

class CheckCatalogResponse(_message.Message):
    __slots__ = ("rows_checked", "damaged", "quarantined", "in_quarantine")
    ROWS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    IN_QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    rows_checked: int
    damaged: _containers.RepeatedCompositeFieldContainer[DamagedRecord]
    quarantined: int
    in_quarantine: _containers.RepeatedCompositeFieldContainer[DamagedRecord]
    def __init__(self, rows_checked: _Optional[int] = ..., damaged: _Optional[_Iterable[_Union[DamagedRecord, _Mapping]]] = ..., quarantined: _Optional[int] = ..., in_quarantine: _Optional[_Iterable[_Union[DamagedRecord, _Mapping]]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "name", "role", "collections", "created_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    role: Role
    collections: _containers.RepeatedScalarFieldContainer[str]
    created_ms: int
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., collections: _Optional[_Iterable[str]] = ..., created_ms: _Optional[int] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "role", "collections")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MigrateCollectionRequest(_message.Message):
    __slots__ = ("collection", "model", "dry_run")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    model: str
    dry_run: bool
    def __init__(self, collection: _Optional[str] = ..., model: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class MigrationProgress(_message.Message):
    __slots__ = ("stage", "done", "total", "model_id", "faces_without_crops", "without_crops", "already_staged", "estimate_s")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_WITHOUT_CROPS_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_CROPS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_STAGED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_S_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    model_id: str
    faces_without_crops: int
    without_crops: _containers.RepeatedScalarFieldContainer[int]
    already_staged: int
    estimate_s: float
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., model_id: _Optional[str] = ..., faces_without_crops: _Optional[int] = ..., without_crops: _Optional[_Iterable[int]] = ..., already_staged: _Optional[int] = ..., estimate_s: _Optional[float] = ...) -> None: ...

class CroplessImagesRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CroplessImages(_message.Message):
    __slots__ = ("image_sha256",)
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    image_sha256: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image_sha256: _Optional[_Iterable[str]] = ...) -> None: ...

class FillCropsRequest(_message.Message):
    __slots__ = ("collection", "image")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: Image
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class FillCropsResponse(_message.Message):
    __slots__ = ("image_sha256", "filled", "unmatched")
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    FILLED_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_FIELD_NUMBER: _ClassVar[int]
    image_sha256: str
    filled: _containers.RepeatedScalarFieldContainer[int]
    unmatched: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, image_sha256: _Optional[str] = ..., filled: _Optional[_Iterable[int]] = ..., unmatched: _Optional[_Iterable[int]] = ...) -> None: ...
