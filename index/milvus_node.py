"""Search from Milvus alone, for a search node (`facebank serve --role search`).

A node has no catalog. It finds a collection in the registry its primary
publishes (milvus_registry.py), searches that collection's Milvus rows, and
groups the face hits into identities with the very code the primary runs
(identity_search.search_identities), fed with the identity fields each row
carries. Searches run at Strong consistency: a forget answers only once a
Strong query finds none of the faces, so from that moment no node serves them.
A metadata filter becomes an expression on the rows' JSON field.
"""

from __future__ import annotations

import json

import numpy as np

from facebank.errors import NotFound, Unavailable
from facebank.index.identity_search import IdentityMatches, SearchParts, search_identities
from facebank.index.milvus_vectors import BATCH, HNSW_EF, STRONG
from facebank.index.records import CollectionRecord, IdentityRecord

UNBOUNDED = 1 << 62  # a node does not count a collection's rows; search_identities stops widening at k = 1024


def where(metadata_filter: dict[str, str]) -> str:
    """A metadata filter as a Milvus expression on the rows' JSON field."""
    return " and ".join(f'meta["metadata"][{json.dumps(k)}] == {json.dumps(v)}' for k, v in sorted(metadata_filter.items()))


class NodeSearch:
    """One request's search of one Milvus collection: the hits' row fields are kept
    for the grouping that follows (search_identities asks for owners and records)."""

    def __init__(self, client, coll: CollectionRecord, milvus_name: str, hnsw: bool) -> None:
        self.client, self.coll, self.name, self.hnsw = client, coll, milvus_name, hnsw
        self.fields: dict[int, tuple[int, str, dict]] = {}
        self.index = self  # search_identities reads len(segment.index)

    def __len__(self) -> int:
        return UNBOUNDED

    def search(self, queries: np.ndarray, k: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """`allowed`: a Milvus filter expression (see `where`) or None."""
        nq = len(queries)
        scores, labels = np.zeros((nq, k), np.float32), np.full((nq, k), -1, np.int64)
        params = {"metric_type": "IP", "params": {"ef": max(HNSW_EF, int(self.coll.index.get("ef_search", 0)), k)} if self.hnsw else {}}
        try:
            hits = self.client.search(self.name, data=np.asarray(queries, np.float32).tolist(), limit=k, filter=allowed or "",
                                      search_params=params, anns_field="vector", output_fields=["iid", "identity", "meta"],
                                      consistency_level=STRONG)
        except Exception as err:
            raise Unavailable(f"Milvus did not answer ({type(err).__name__}: {err}); retry shortly") from None
        for row, found in enumerate(hits):
            for col, hit in enumerate(found[:k]):
                face_id = int(hit["id"] if "id" in hit else hit["face_id"])
                entity = hit.get("entity", hit)
                labels[row, col], scores[row, col] = face_id, float(hit["distance"])
                self.fields[face_id] = (int(entity["iid"]), entity["identity"], entity["meta"] or {})
        return scores, labels

    def lookup(self, labels: np.ndarray) -> np.ndarray:
        fields = self.fields
        flat = [fields[f][0] if f in fields else -1 for f in np.asarray(labels).ravel().tolist()]
        return np.asarray(flat, np.int64).reshape(np.shape(labels))

    def records(self, iids: set[int]) -> dict[int, IdentityRecord]:
        out = {}
        for iid, identity, meta in self.fields.values():
            if iid in iids and iid not in out:
                out[iid] = IdentityRecord(iid, self.coll.id, identity, meta.get("display_name", ""), dict(meta.get("metadata", {})), 0, 0)
        return out


class NodeReader:
    """The collections a node serves, from the registry view, and their searches."""

    def __init__(self, client, view, hnsw: bool = True) -> None:
        self.client, self.view, self.hnsw = client, view, hnsw

    def collection(self, name: str, t=None) -> CollectionRecord:
        entry = self.view.collection(name)
        if entry is None:
            raise NotFound(f"collection {name!r} does not exist (as published by the primary)")
        return CollectionRecord(entry["cid"], name, entry["model_id"], entry["dim"], entry["threshold"], 0,
                                index={"kind": "milvus", "nprobe": 0, "ef_search": entry.get("ef_search", 0)})

    def _milvus(self, name: str) -> str:
        return self.view.collection(name)["milvus"]

    def search(self, collection: str, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None = None,
               min_score: float = -1.0) -> IdentityMatches:
        coll = self.collection(collection)
        node = NodeSearch(self.client, coll, self._milvus(collection), self.hnsw)
        parts = SearchParts(node, node, node.records, lambda wanted: where(wanted))
        return search_identities(parts, queries, top_k, metadata_filter, min_score)

    def face_vector(self, collection: str, face_id: int) -> np.ndarray:
        rows = self._query(collection, f"face_id == {int(face_id)} and iid > 0")
        if not rows:
            raise NotFound(f"face {face_id} does not exist in collection {collection!r}")
        return np.asarray(rows[0]["vector"], np.float32)

    def identity_vectors(self, collection: str, identity_id: str) -> np.ndarray:
        rows = self._query(collection, f"identity == {json.dumps(identity_id)}")
        if not rows:
            raise NotFound(f"identity {identity_id!r} does not exist in collection {collection!r}")
        return np.asarray([r["vector"] for r in rows], np.float32)

    def _query(self, collection: str, expr: str) -> list[dict]:
        self.collection(collection)
        try:
            return self.client.query(self._milvus(collection), filter=expr, output_fields=["vector"], limit=BATCH, consistency_level=STRONG)
        except Exception as err:
            raise Unavailable(f"Milvus did not answer ({type(err).__name__}: {err}); retry shortly") from None
