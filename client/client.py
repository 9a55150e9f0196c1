"""The Python SDK: one typed client over either transport.

    import facebank
    fb = facebank.connect()                      # a server (FACEBANK_SERVER or 127.0.0.1:50051)
    fb = facebank.open_local("./facebank-data")  # or the engine in this process
    fb.enroll("alice", ["alice1.jpg", "alice2.jpg"])
    result = fb.search("group.jpg")

Every method returns `facebank.v1` messages and raises `facebank.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from facebank import display
from facebank.transport import GrpcTransport, LocalTransport, Transport
from facebank.v1 import facebank_pb2 as pb

display.install()  # readable repr/str for the results people print (display.py)

ImageLike = bytes | str | Path


def _image(image: ImageLike, source_ref: str = "") -> pb.Image:
    if isinstance(image, (str, Path)):
        path = Path(image)
        return pb.Image(data=path.read_bytes(), source_ref=source_ref or str(path))
    return pb.Image(data=bytes(image), source_ref=source_ref)


_INDEX_KINDS = {"auto": pb.INDEX_KIND_AUTO, "flat": pb.INDEX_KIND_FLAT, "ivf": pb.INDEX_KIND_IVF, "ivf_sq8": pb.INDEX_KIND_IVF_SQ8,
                "hnsw": pb.INDEX_KIND_HNSW}
_ROLES = {"search": pb.ROLE_SEARCH, "enroll": pb.ROLE_ENROLL, "admin": pb.ROLE_ADMIN}


def _kind(index: str) -> int:
    if index not in _INDEX_KINDS:
        from facebank.errors import InvalidArgument

        raise InvalidArgument(f"index must be one of {', '.join(_INDEX_KINDS)}, not {index!r}")
    return _INDEX_KINDS[index]


def _options(top_k: int, threshold: float | None, filter: dict[str, str] | None) -> pb.SearchOptions:
    options = pb.SearchOptions(top_k=top_k, filter=filter or {})
    if threshold is not None:
        options.threshold = threshold
    return options


class Client:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- collections ------------------------------------------------------------------

    def create_collection(self, name: str, *, index: str = "auto", nprobe: int = 0, ef_search: int = 0, threshold: float | None = None,
                          scratch_lease_seconds: int = 0, keep_crops: bool | None = None) -> pb.Collection:
        req = pb.CreateCollectionRequest(name=name, index=pb.IndexOptions(kind=_kind(index), nprobe=nprobe, ef_search=ef_search),
                                         scratch_lease_seconds=scratch_lease_seconds)
        if threshold is not None:
            req.threshold = threshold
        if keep_crops is not None:
            req.keep_crops = keep_crops
        return self.transport.call("Collections", "CreateCollection", req)

    def update_collection(self, name: str, *, threshold: float | None = None, index: str | None = None, nprobe: int = 0, ef_search: int = 0,
                          keep_crops: bool | None = None) -> pb.Collection:
        req = pb.UpdateCollectionRequest(name=name)
        if keep_crops is not None:
            req.keep_crops = keep_crops
        if threshold is not None:
            req.threshold = threshold
        if index is not None:
            req.index.CopyFrom(pb.IndexOptions(kind=_kind(index), nprobe=nprobe, ef_search=ef_search))
        return self.transport.call("Collections", "UpdateCollection", req)

    def describe_collection(self, name: str = "default") -> pb.Collection:
        return self.transport.call("Collections", "DescribeCollection", pb.CollectionRef(name=name))

    def list_collections(self) -> list[pb.Collection]:
        return list(self.transport.call("Collections", "ListCollections", pb.ListCollectionsRequest()).collections)

    def drop_collection(self, name: str) -> pb.DropCollectionResponse:
        return self.transport.call("Collections", "DropCollection", pb.CollectionRef(name=name))

    # -- enrollment ----------------------------------------------------------------------

    def enroll(self, identity_id: str, images: Sequence[ImageLike], *, collection: str = "default", display_name: str = "",
               metadata: dict[str, str] | None = None, accept_low_quality: bool = False) -> pb.EnrollResponse:
        req = pb.EnrollRequest(
            collection=collection, identity_id=identity_id, display_name=display_name, metadata=metadata or {},
            images=[_image(i) for i in images],
            quality_filter=pb.QUALITY_FILTER_NONE if accept_low_quality else pb.QUALITY_FILTER_DEFAULT,
        )
        return self.transport.call("Enrollment", "Enroll", req)

    def bulk_enroll(self, items: Iterable[pb.BulkEnrollItem]) -> Iterator[pb.BulkEnrollResult]:
        return self.transport.stream("Enrollment", "BulkEnroll", iter(items))

    # -- search ----------------------------------------------------------------------------

    def search(self, image: ImageLike, *, collection: str = "default", top_k: int = 5, threshold: float | None = None,
               filter: dict[str, str] | None = None, max_faces: int = 0, accept_low_quality: bool = False) -> pb.SearchByImageResponse:
        """Faces that fail the quality check are left out (counted in `faces_below_quality`) unless accept_low_quality."""
        req = pb.SearchByImageRequest(collection=collection, image=_image(image), options=_options(top_k, threshold, filter), max_faces=max_faces,
                                      quality_filter=pb.QUALITY_FILTER_NONE if accept_low_quality else pb.QUALITY_FILTER_DEFAULT)
        return self.transport.call("Search", "SearchByImage", req)

    def search_embeddings(self, queries: np.ndarray, *, collection: str = "default", top_k: int = 5, threshold: float | None = None,
                          filter: dict[str, str] | None = None, packed: bool = False) -> pb.SearchByEmbeddingResponse:
        """packed=True: the answer comes as arrays in `.packed` (read it with
        `MatchArrays.from_pb`), much cheaper for batches; no metadata."""
        matrix = np.ascontiguousarray(np.asarray(queries, dtype="<f4").reshape(-1, np.shape(queries)[-1]))
        req = pb.SearchByEmbeddingRequest(collection=collection, queries_f32=matrix.tobytes(), options=_options(top_k, threshold, filter),
                                          packed_answer=packed)
        return self.transport.call("Search", "SearchByEmbedding", req)

    def verify(self, image: ImageLike, *, other_image: ImageLike | None = None, identity_id: str | None = None,
               collection: str = "default", threshold: float | None = None, face: int = 0, other_face: int = 0) -> pb.VerifyResponse:
        """face / other_face: which face of each image, by size (1 = the largest, also when 0)."""
        req = pb.VerifyRequest(collection=collection, image=_image(image), face=face, other_face=other_face)
        if other_image is not None:
            req.other_image.CopyFrom(_image(other_image))
        if identity_id is not None:
            req.identity_id = identity_id
        if threshold is not None:
            req.threshold = threshold
        return self.transport.call("Search", "Verify", req)

    def detect_faces(self, image: ImageLike, *, collection: str = "", max_faces: int = 0) -> pb.DetectFacesResponse:
        return self.transport.call("Search", "DetectFaces", pb.DetectFacesRequest(collection=collection, image=_image(image), max_faces=max_faces))

    # -- identities -----------------------------------------------------------------------

    def create_identity(self, identity_id: str, *, collection: str = "default", display_name: str = "",
                        metadata: dict[str, str] | None = None) -> pb.Identity:
        req = pb.CreateIdentityRequest(collection=collection, identity_id=identity_id, display_name=display_name, metadata=metadata or {})
        return self.transport.call("Identities", "CreateIdentity", req)

    def get_identity(self, identity_id: str, *, collection: str = "default", with_crops: bool = False) -> pb.Identity:
        return self.transport.call("Identities", "GetIdentity", pb.IdentityRef(collection=collection, identity_id=identity_id, with_crops=with_crops))

    def list_identities(self, *, collection: str = "default", page_size: int = 100, with_crops: bool = False) -> Iterator[pb.Identity]:
        token = ""
        while True:
            req = pb.ListIdentitiesRequest(collection=collection, page_size=page_size, page_token=token, with_crops=with_crops)
            page = self.transport.call("Identities", "ListIdentities", req)
            yield from page.identities
            token = page.next_page_token
            if not token:
                return

    def update_identity(self, identity_id: str, *, collection: str = "default", display_name: str | None = None,
                        set_metadata: dict[str, str] | None = None, remove_metadata: Sequence[str] = ()) -> pb.Identity:
        req = pb.UpdateIdentityRequest(collection=collection, identity_id=identity_id, set_metadata=set_metadata or {}, remove_metadata=list(remove_metadata))
        if display_name is not None:
            req.display_name = display_name
        return self.transport.call("Identities", "UpdateIdentity", req)

    def delete_face(self, face_id: int, *, collection: str = "default") -> None:
        self.transport.call("Identities", "DeleteFace", pb.DeleteFaceRequest(collection=collection, face_id=face_id))

    def face_crop(self, face_id: int, *, collection: str = "default") -> pb.FaceCrop:
        """The aligned face (JPEG) kept for a stored face, and the face."""
        return self.transport.call("Identities", "GetFaceCrop", pb.FaceRef(collection=collection, face_id=face_id))

    def forget(self, identity_id: str, *, collection: str = "default", strict: bool = False) -> pb.ForgetReceipt:
        return self.transport.call("Identities", "Forget", pb.ForgetRequest(collection=collection, identity_id=identity_id, strict=strict))

    # -- clusters -------------------------------------------------------------------------

    def ingest(self, items: Iterable[pb.IngestItem]) -> Iterator[pb.IngestResult]:
        return self.transport.stream("Clusters", "Ingest", iter(items))

    def cluster(self, *, collection: str = "default", full: bool = False) -> Iterator[pb.ClusterProgress]:
        return self.transport.stream("Clusters", "RunClustering", pb.ClusterRequest(collection=collection, full=full))

    def list_clusters(self, *, collection: str = "default", include_faces: bool = False, with_crops: bool = False,
                      unclustered_only: bool = False, suggest: bool = False) -> pb.ListClustersResponse:
        req = pb.ListClustersRequest(collection=collection, include_faces=include_faces, with_crops=with_crops, unclustered_only=unclustered_only,
                                     suggest=suggest)
        return self.transport.call("Clusters", "ListClusters", req)

    def get_cluster(self, cluster_id: int, *, collection: str = "default", with_crops: bool = False) -> pb.Cluster:
        return self.transport.call("Clusters", "GetCluster", pb.ClusterRef(collection=collection, cluster_id=cluster_id, with_crops=with_crops))

    def merge_clusters(self, into: int, others: Sequence[int], *, collection: str = "default") -> pb.Cluster:
        return self.transport.call("Clusters", "MergeClusters", pb.MergeClustersRequest(collection=collection, into=into, others=list(others)))

    def split_cluster(self, cluster_id: int, face_ids: Sequence[int], *, collection: str = "default") -> pb.Cluster:
        return self.transport.call("Clusters", "SplitCluster", pb.SplitClusterRequest(collection=collection, cluster_id=cluster_id, face_ids=list(face_ids)))

    def move_faces(self, face_ids: Sequence[int], into: int, *, collection: str = "default") -> pb.Cluster:
        return self.transport.call("Clusters", "MoveFaces", pb.MoveFacesRequest(collection=collection, into=into, face_ids=list(face_ids)))

    def name_cluster(self, cluster_id: int, identity_id: str, *, collection: str = "default", display_name: str = "") -> pb.Identity:
        req = pb.NameClusterRequest(collection=collection, cluster_id=cluster_id, identity_id=identity_id, display_name=display_name)
        return self.transport.call("Clusters", "NameCluster", req)

    # -- admin -------------------------------------------------------------------------------

    def stats(self) -> pb.StatsResponse:
        return self.transport.call("Admin", "Stats", pb.StatsRequest())

    def compact(self) -> pb.CompactResponse:
        return self.transport.call("Admin", "Compact", pb.CompactRequest())

    def migrate(self, model: str, *, collection: str = "default", dry_run: bool = False) -> Iterator[pb.MigrationProgress]:
        """Move a collection to another shipped model (re-embedding every face from its crop); streams progress.
        Interrupted, it resumes when called again."""
        return self.transport.stream("Admin", "MigrateCollection", pb.MigrateCollectionRequest(collection=collection, model=model, dry_run=dry_run))

    def cropless_images(self, *, collection: str = "default") -> set[str]:
        """SHA-256 of every photo with a face of the collection that has no kept crop."""
        chunks = self.transport.stream("Admin", "ListCroplessImages", pb.CroplessImagesRequest(collection=collection))
        return {sha for chunk in chunks for sha in chunk.image_sha256}

    def fill_crops(self, image: ImageLike, *, collection: str = "default") -> pb.FillCropsResponse:
        """Crops for this photo's faces stored without one, taken again from it (the same faces only)."""
        return self.transport.call("Admin", "FillCrops", pb.FillCropsRequest(collection=collection, image=_image(image)))

    def receipts(self) -> pb.ListReceiptsResponse:
        return self.transport.call("Admin", "ListReceipts", pb.ListReceiptsRequest())

    def receipt_key(self) -> pb.ReceiptKeyResponse:
        return self.transport.call("Admin", "ReceiptKey", pb.ReceiptKeyRequest())

    def check_catalog(self, *, quarantine: bool = False) -> pb.CheckCatalogResponse:
        return self.transport.call("Admin", "CheckCatalog", pb.CheckCatalogRequest(quarantine=quarantine))

    def create_api_key(self, name: str, role: str, collections: Sequence[str] = ()) -> pb.CreateApiKeyResponse:
        return self.transport.call("Admin", "CreateApiKey", pb.CreateApiKeyRequest(name=name, role=_ROLES[role], collections=list(collections)))

    def list_api_keys(self) -> list[pb.ApiKey]:
        return list(self.transport.call("Admin", "ListApiKeys", pb.ListApiKeysRequest()).keys)

    def revoke_api_key(self, key_id: str) -> None:
        self.transport.call("Admin", "RevokeApiKey", pb.RevokeApiKeyRequest(key_id=key_id))


def connect(address: str | None = None, **options) -> Client:
    """A client of a running server (address: FACEBANK_SERVER, else 127.0.0.1:50051)."""
    return Client(GrpcTransport(address, **options))


def open_local(data_dir: str | Path = "./facebank-data", **config) -> Client:
    """The engine in this process, on `data_dir` (no server needed; one process at a time)."""
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine

    return Client(LocalTransport(Engine(ServerConfig(data_dir=Path(data_dir), **config))))
