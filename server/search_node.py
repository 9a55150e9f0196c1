"""A search node: `facebank serve --role search --vectors milvus://HOST:PORT`.

It runs the models and answers SearchByImage, SearchByEmbedding, Verify and
DetectFaces from Milvus alone (index/milvus_node.py), with the API keys, roles
and collection scopes its primary publishes (index/milvus_registry.py), re-read
every second; every other call is refused with FAILED_PRECONDITION naming the
primary. Any number of nodes can run beside one primary. It shares the primary's
search code: SearchService over a store-like reader.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from facebank.errors import FailedPrecondition, InvalidArgument, Reason
from facebank.index.milvus_node import NodeReader
from facebank.index.milvus_registry import REFRESH_S, Registry, RegistryView, find_prefix
from facebank.index.records import ApiKeyRecord
from facebank.server import validate
from facebank.server.auth import ApiKeys, check_secret
from facebank.server.config import ServerConfig
from facebank.server.engine import Parts, load_embedder, method_name
from facebank.server.faces import FacePipeline
from facebank.server.search import SearchService
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)

SERVED = {("Search", "SearchByImage"), ("Search", "SearchByEmbedding"), ("Search", "Verify"), ("Search", "DetectFaces")}


# A node cannot tell a revoked key from one the primary has not published yet (neither is in the registry).
NODE_NOT_VALID = ("the API key is not valid on this search node: revoked, mistyped, or so new that the primary has not "
                  "published it yet (keys reach search nodes within seconds); retry shortly, or ask an admin for a new one")


class RegistryKeys:
    """The primary's API keys as the registry publishes them (same checks as ApiKeys)."""

    authorize = staticmethod(ApiKeys.authorize)

    def __init__(self, view: RegistryView) -> None:
        self.view = view

    def any(self) -> bool:
        return self.view.any_key()

    def authenticate(self, secret: str | None) -> ApiKeyRecord:
        return check_secret(secret, self._record, NODE_NOT_VALID)

    def _record(self, key_id: str) -> ApiKeyRecord | None:
        entry = self.view.key(key_id)
        if entry is None:
            return None
        return ApiKeyRecord(entry["key_id"], "", entry["role"], list(entry["collections"]), entry["secret_sha256"], 0)


class NodeSearchService(SearchService):
    def stored_vectors(self, collection: str, req: pb.VerifyRequest) -> np.ndarray:
        if req.WhichOneof("against") == "face_id":
            return self.p.store.face_vector(collection, req.face_id)[None]
        return self.p.store.identity_vectors(collection, validate.identity_id(req.identity_id))


class SearchNode:
    """Engine-shaped (method, api_keys, close) so the gRPC and HTTP edges serve it as they serve Engine."""

    role = "search"

    def __init__(self, config: ServerConfig, *, embedder=None) -> None:
        from facebank.index.milvus_vectors import MilvusTarget
        from facebank.server.runtime import configure_process

        if not config.vectors.startswith("milvus://"):
            raise InvalidArgument("a search node reads its primary's vectors from a Milvus server: start it with --vectors milvus://HOST:PORT "
                                  "(Milvus Lite is one process's file and cannot be shared)", reason=Reason.BAD_OPTION)
        configure_process()
        self.config = config
        self.target = MilvusTarget(config.vectors, prefix="")
        self._owns_embedder = embedder is None
        try:
            prefix = find_prefix(self.target.client, config.vectors, config.primary_id)
            self.view = RegistryView(Registry(self.target.client, prefix))
            self.embedder = embedder or load_embedder(config)
        except BaseException:
            self.target.close()
            raise
        self.store = NodeReader(self.target.client, self.view)
        self.parts = Parts(config, self.store, None, FacePipeline(self.embedder))
        self.search = NodeSearchService(self.parts)
        self.keys = RegistryKeys(self.view)
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name="facebank-registry", daemon=True)
        self._refresher.start()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.view.refresh()

    def method(self, service: str, rpc: str):
        if (service, rpc) in SERVED:
            return getattr(self.search, method_name(rpc))
        return lambda request: self._refuse(service, rpc)

    def _refuse(self, service: str, rpc: str):
        raise FailedPrecondition(f"this is a search node: it answers searches, verifications and detections only; send {service}/{rpc} "
                                 "to the primary (the server started without --role search)", reason=Reason.BAD_OPTION)

    def api_keys(self) -> RegistryKeys:
        return self.keys

    def begin_shutdown(self) -> None:
        """Nothing long runs in the background here (see Engine.begin_shutdown)."""

    def close(self) -> None:
        self._stop.set()
        self._refresher.join(timeout=5)
        self.parts.close()
        if self._owns_embedder:
            self.embedder.close()
        self.target.close()
