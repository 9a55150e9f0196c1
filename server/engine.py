"""The facebank engine: the whole API, in process.

`Engine` wires the parts together in one place (store, embedder, services).
Each proto service has one class here; each RPC is a method named after it in
snake_case that takes and returns `facebank.v1` messages. The gRPC edge
(grpc_api.py) and the in-process client both call these methods, so the two
behave the same by construction; typed errors become gRPC statuses only at
the edge.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

from facebank.embedder import FaceEmbedder, OnnxFaceEmbedder
from facebank.embedder.models import MODELS, ModelSpec, model_spec
from facebank.errors import FailedPrecondition, InvalidArgument, Reason
from facebank.index.lifecycle import start_store, stop_store
from facebank.index.maintenance import Maintenance
from facebank.index.records import IndexSettings
from facebank.index.store import FaceStore
from facebank.server import convert, validate
from facebank.server.config import DEFAULT_COLLECTION, ServerConfig
from facebank.server.faces import FacePipeline
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What every service shares. `faces` runs the server's model; a collection migrated
    to another shipped model is served by that model (`faces_for`), loaded on first use."""

    config: ServerConfig
    store: FaceStore
    maintenance: Maintenance
    faces: FacePipeline
    others: dict[str, FacePipeline] = field(default_factory=dict)
    _loading: threading.Lock = field(default_factory=threading.Lock)

    @property
    def default_threshold(self) -> float:
        """New collections' threshold: the server's setting, else the model's own."""
        if self.config.default_threshold is not None:
            return self.config.default_threshold
        return self.faces.embedder.spec.default_threshold

    def collection(self, name: str):
        rec = self.store.collection(validate.collection_name(name))
        self.faces_for(rec)
        return rec

    def faces_for(self, rec) -> FacePipeline:
        """The pipeline of the collection's model; MODEL_MISMATCH if this server cannot run it."""
        if rec.model_id == self.faces.model_id:
            return self.faces
        found = self.others.get(rec.model_id)
        if found is not None:
            return found
        spec = shipped_spec(rec.model_id)
        if spec is None:
            raise FailedPrecondition(
                f"collection {rec.name!r} holds embeddings of model {rec.model_id!r}, but this server runs "
                f"{self.faces.model_id!r}; start the server with that model (--model-spec) to use it",
                reason=Reason.MODEL_MISMATCH,
            )
        return self.pipeline(spec)

    def pipeline(self, spec: ModelSpec) -> FacePipeline:
        """The server's own pipeline if it runs this model, else one loaded once for it."""
        if spec.model_id == self.faces.model_id:
            return self.faces
        with self._loading:
            if spec.model_id not in self.others:
                self.others[spec.model_id] = FacePipeline(load_embedder(self.config, spec))
            return self.others[spec.model_id]

    def close(self) -> None:
        for pipeline in self.others.values():
            pipeline.embedder.close()


def shipped_spec(model_id: str) -> ModelSpec | None:
    """The shipped model pair with this id, if any."""
    for name in MODELS:
        spec = model_spec(name)
        if spec.model_id == model_id:
            return spec
    return None


def method_name(rpc: str) -> str:
    """`CreateCollection` -> `create_collection`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()


def load_embedder(config: ServerConfig, spec: ModelSpec | None = None) -> FaceEmbedder:
    spec = spec or (ModelSpec.from_json(config.model_spec) if config.model_spec else model_spec(config.model))
    return OnnxFaceEmbedder(
        spec, device=config.device, threads=config.threads, micro_batch_wait_ms=config.micro_batch_wait_ms, backend=config.backend
    )


class Engine:
    role = "primary"  # a search node (search_node.SearchNode) says "search"

    def __init__(self, config: ServerConfig, *, embedder: FaceEmbedder | None = None) -> None:
        from facebank.server.admin import AdminService
        from facebank.server.clusters import ClustersService
        from facebank.server.enrollment import EnrollmentService
        from facebank.server.identities import IdentitiesService
        from facebank.server.search import SearchService

        from facebank.server.runtime import configure_process

        configure_process()
        self.config = config
        self._owns_embedder = embedder is None
        self.embedder = embedder or load_embedder(config)
        try:
            self.store, self.maintenance = start_store(
                config.data_dir, keys_dir=config.resolved_keys_dir, background=config.background, device=config.device,
                vectors=config.vectors)
        except BaseException:
            if self._owns_embedder:
                self.embedder.close()
            raise
        self.parts = Parts(config, self.store, self.maintenance, FacePipeline(self.embedder))
        self._ensure_default_collection()
        self.collections = CollectionsService(self.parts)
        self.enrollment = EnrollmentService(self.parts)
        self.search = SearchService(self.parts)
        self.identities = IdentitiesService(self.parts)
        self.clusters = ClustersService(self.parts)
        self.admin = AdminService(self.parts)
        self._services = {
            "Collections": self.collections, "Enrollment": self.enrollment, "Search": self.search,
            "Identities": self.identities, "Clusters": self.clusters, "Admin": self.admin,
        }

    def service(self, name: str):
        """The implementation of the proto service `name`."""
        return self._services[name]

    def method(self, service: str, rpc: str):
        """The engine method implementing an RPC: `Collections/CreateCollection` -> `create_collection`."""
        return getattr(self._services[service], method_name(rpc))

    def api_keys(self):
        from facebank.server.auth import ApiKeys

        return ApiKeys(self.store)

    def _ensure_default_collection(self) -> None:
        if not any(c.name == DEFAULT_COLLECTION for c in self.store.list_collections()):
            self.store.create_collection(
                DEFAULT_COLLECTION, self.parts.faces.model_id, self.parts.faces.dim, self.parts.default_threshold, IndexSettings(),
                keep_crops=self.config.keep_crops,
            )

    def begin_shutdown(self) -> None:
        """Shutdown began: long background work (a rebuild, a compaction) is left now, so
        that the calls in flight finish within the grace period instead of waiting for it."""
        self.maintenance.stopping()

    def close(self) -> None:
        stop_store(self.store, self.maintenance)
        self.parts.close()
        if self._owns_embedder:
            self.embedder.close()


def index_settings(options: pb.IndexOptions) -> IndexSettings:
    if options.kind not in convert.INDEX_KIND_FROM_PB:
        raise InvalidArgument(f"index kind {options.kind} is unknown; use AUTO, FLAT, IVF, IVF_SQ8 or HNSW", reason=Reason.BAD_OPTION)
    return IndexSettings(
        kind=convert.INDEX_KIND_FROM_PB[options.kind],
        nprobe=validate.positive(options.nprobe, "nprobe", 65536),
        ef_search=validate.positive(options.ef_search, "ef_search", 4096),
    )


class CollectionsService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    def create_collection(self, req: pb.CreateCollectionRequest) -> pb.Collection:
        name = validate.collection_name(req.name, "name")
        threshold = validate.threshold(req.threshold) if req.HasField("threshold") else self.p.default_threshold
        lease = validate.positive(req.scratch_lease_seconds, "scratch_lease_seconds", 7 * 24 * 3600)
        keep_crops = req.keep_crops if req.HasField("keep_crops") else self.p.config.keep_crops
        rec = self.p.store.create_collection(name, self.p.faces.model_id, self.p.faces.dim, threshold, index_settings(req.index),
                                             scratch_lease_s=lease, keep_crops=keep_crops)
        return convert.collection_pb(rec, self.p.store.stats(rec))

    def update_collection(self, req: pb.UpdateCollectionRequest) -> pb.Collection:
        name = validate.collection_name(req.name, "name")
        threshold = validate.threshold(req.threshold) if req.HasField("threshold") else None
        settings = index_settings(req.index) if req.HasField("index") else None
        keep_crops = req.keep_crops if req.HasField("keep_crops") else None
        rec = self.p.store.update_collection(name, threshold, settings, keep_crops)
        return convert.collection_pb(rec, self.p.store.stats(rec))

    def describe_collection(self, req: pb.CollectionRef) -> pb.Collection:
        rec = self.p.store.collection(validate.collection_name(req.name, "name"))
        return convert.collection_pb(rec, self.p.store.stats(rec))

    def list_collections(self, req: pb.ListCollectionsRequest) -> pb.ListCollectionsResponse:
        return pb.ListCollectionsResponse(collections=[convert.collection_pb(r, self.p.store.stats(r)) for r in self.p.store.list_collections()])

    def drop_collection(self, req: pb.CollectionRef) -> pb.DropCollectionResponse:
        from facebank.index.drop import drop_collection

        name = validate.collection_name(req.name, "name")
        counts = drop_collection(self.p.store, name, receipt=not self.p.store.collection(name).scratch_lease_s)
        if name == DEFAULT_COLLECTION:  # the default collection always exists, empty if need be
            self.p.store.create_collection(name, self.p.faces.model_id, self.p.faces.dim, self.p.default_threshold, IndexSettings(),
                                           keep_crops=self.p.config.keep_crops)
        return pb.DropCollectionResponse(identities_forgotten=counts["identities"], faces_removed=counts["faces"])
