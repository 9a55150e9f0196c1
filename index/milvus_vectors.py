"""Vectors kept in Milvus instead of in-process FAISS (`--vectors milvus://HOST:PORT`
or `--vectors milvus-lite:PATH.db`).

The catalog stays the truth. Each segment of each collection is one Milvus
collection (face id as primary key, vector, and what a search node answers
with: the identity's index, external id, and display name and metadata as
JSON, `FaceFields`); the unit of work applies committed
changes to it in order, exactly as to a FAISS segment, and every write is an
upsert or a delete by face id, so replaying the change log after a crash is
idempotent. A segment's "snapshot" holds no vectors: it records, after a Milvus
flush, the change-log sequence Milvus has, so a restart replays only the tail.

Removal is checked, not assumed: Milvus answers searches at its default
(Bounded) consistency from a view that may predate a delete. `remove` deletes
by face id, then queries the same ids at Strong consistency and fails unless
none comes back; `purge` flushes and asks for a compaction, and reports what
the server said, since rows leave Milvus's storage only at compaction and the
old segment files only at garbage collection.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from facebank.errors import FailedPrecondition, InvalidArgument, Reason, Unavailable
from facebank.index.top_k import exact_top_k
from facebank.index.vectors import SearchParams, VectorIndex

log = logging.getLogger(__name__)

BATCH = 2000              # rows per upsert / ids per delete or query (well under Milvus's 64 MB message)
ID_MAX = 512              # bytes of an external id in a Milvus row (facebank's own limit is lower)
FIELDS = ("face_id", "vector", "iid", "identity", "meta")
FaceFields = Callable[[list[int]], dict[int, tuple[int, str, dict]]]  # face ids -> {face id: (iid, external id, meta)}
HNSW = {"M": 32, "efConstruction": 200}
HNSW_EF = 128
STRONG = "Strong"
SESSION = "Session"   # searches: every write this process made is visible (pymilvus tracks their timestamps)


def canonical(spec: str) -> str:
    """The --vectors value as recorded in the catalog (a Milvus Lite path made absolute)."""
    if spec.startswith("milvus-lite:"):
        return "milvus-lite:" + str(Path(spec.removeprefix("milvus-lite:")).expanduser().resolve())
    return spec


class MilvusTarget:
    """Where a store's vectors live in Milvus, and the one client that talks to it."""

    def __init__(self, spec: str, prefix: str) -> None:
        self.spec = spec
        self.prefix = prefix
        self.lite = spec.startswith("milvus-lite:")
        if self.lite:
            path = Path(spec.removeprefix("milvus-lite:")).expanduser()
            if path.suffix != ".db":
                raise InvalidArgument(f"--vectors {spec!r}: a Milvus Lite file must end in .db, e.g. milvus-lite:./facebank-data/vectors.db",
                                      reason=Reason.BAD_OPTION)
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path.resolve())
        elif re.fullmatch(r"milvus://[^/:]+:\d+", spec):
            uri = "http://" + spec.removeprefix("milvus://")
        else:
            raise InvalidArgument(f"--vectors {spec!r} must be faiss, milvus://HOST:PORT or milvus-lite:PATH.db", reason=Reason.BAD_OPTION)
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise FailedPrecondition(f"--vectors {spec}: pymilvus is not installed (pip install 'facebank[milvus]')") from None
        try:
            self.client = MilvusClient(uri=uri)
            self.client.list_collections()
        except Exception as err:
            raise Unavailable(f"cannot reach Milvus at {spec} ({type(err).__name__}: {err}); start it or fix --vectors") from None
        # FLAT on Milvus Lite (it has no graph index); HNSW on a Milvus server.
        self.index_type = "FLAT" if self.lite else "HNSW"
        self.face_fields: FaceFields = lambda ids: {}  # the store wires its own and the registry (milvus_publish.wire)
        self.registry = None

    def close(self) -> None:
        self.client.close()

    def collection_name(self, cid: int, segment: str) -> str:
        return f"{self.prefix}_{cid}_{segment}_{time.time_ns():x}"

    def owned(self) -> list[str]:
        from facebank.index.milvus_registry import registry_name

        return [name for name in self.client.list_collections() if name.startswith(self.prefix + "_") and name != registry_name(self.prefix)]

    def drop_unused(self, live: set[str]) -> list[str]:
        """Drop this store's Milvus collections that no segment uses: a build a crash
        interrupted, or a dropped collection, may hold vectors the catalog no longer has."""
        dropped = [name for name in self.owned() if name not in live]
        for name in dropped:
            self.client.drop_collection(name)
        if dropped:
            log.info("dropped %d Milvus collection(s) no segment uses: %s", len(dropped), ", ".join(dropped))
        return dropped

    def create(self, name: str, dim: int) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("face_id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("iid", DataType.INT64)
        schema.add_field("identity", DataType.VARCHAR, max_length=ID_MAX)
        schema.add_field("meta", DataType.JSON)
        params = self.client.prepare_index_params()
        extra = {"params": HNSW} if self.index_type == "HNSW" else {}
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", **extra)
        self.client.create_collection(name, schema=schema, index_params=params, consistency_level=STRONG)

    def build(self, cid: int, segment: str, dim: int, source) -> "MilvusIndex":
        """A collection over the faces of `source` (vector_source.VectorSource), chunk by chunk."""
        name = self.collection_name(cid, segment)
        self.create(name, dim)
        index = MilvusIndex(self, name, dim)
        for ids, vectors in source.chunks():
            index.add(ids, vectors)
        return index

    def restore(self, dim: int, info: dict) -> "MilvusIndex":
        name = info.get("collection", "")
        if not name.startswith(self.prefix + "_") or not self.client.has_collection(name):
            raise ValueError(f"Milvus collection {name!r} is not on {self.spec}")
        fields = {f["name"] for f in self.client.describe_collection(name)["fields"]}
        if not set(FIELDS) <= fields:  # made by an older version: rebuilt from the catalog with today's rows
            raise ValueError(f"Milvus collection {name!r} lacks fields {sorted(set(FIELDS) - fields)}")
        index = MilvusIndex(self, name, dim)
        index.recount()
        return index


class MilvusIndex(VectorIndex):
    kind = "milvus"
    family = "milvus"
    external = True

    def __init__(self, target: MilvusTarget, name: str, dim: int) -> None:
        super().__init__(dim)
        self.target = target
        self.client = target.client
        self.name = name
        self._count = 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        for start in range(0, len(ids), BATCH):
            chunk = [int(f) for f in ids[start:start + BATCH]]
            self.client.upsert(self.name, self._rows(chunk, vectors[start:start + BATCH]))
        self._count += len(ids)  # new face ids; a replay of ids already there is recounted after it (after_replay)

    def _rows(self, ids: list[int], vectors: np.ndarray) -> list[dict]:
        known = self.target.face_fields(ids)
        rows = []
        for f, v in zip(ids, vectors):
            iid, identity, meta = known.get(f, (0, "", {}))
            rows.append({"face_id": f, "vector": v.tolist(), "iid": iid, "identity": identity[:ID_MAX], "meta": meta})
        return rows

    def refresh(self, iid: int) -> int:
        """Rewrite the rows of one identity's faces with its current fields (after its
        display name or metadata changed); returns how many."""
        rows = self.client.query(self.name, filter=f"iid == {int(iid)}", output_fields=["face_id", "vector"], consistency_level=STRONG)
        if rows:
            ids = [int(r["face_id"]) for r in rows]
            self.client.upsert(self.name, self._rows(ids, np.asarray([r["vector"] for r in rows], np.float32)))
        return len(rows)

    def remove(self, ids: np.ndarray) -> int:
        """Delete by face id; returns how many were there. Raises unless a Strong query then finds none."""
        ids = [int(f) for f in np.asarray(ids, np.int64)]
        present = self._present(ids)
        for start in range(0, len(present), BATCH):
            self.client.delete(self.name, ids=present[start:start + BATCH])
        left = self._present(present)
        if left:
            raise RuntimeError(f"Milvus still returns {len(left)} deleted face(s) from {self.name} at Strong consistency")
        self._count -= len(present)
        return len(present)

    def _present(self, ids: list[int]) -> list[int]:
        found: list[int] = []
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            rows = self.client.query(self.name, filter=f"face_id in {chunk}", output_fields=["face_id"], consistency_level=STRONG)
            found += [int(r["face_id"]) for r in rows]
        return found

    def search(self, queries: np.ndarray, k: int, params: SearchParams = SearchParams()) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        nq = len(queries)
        scores, labels = np.zeros((nq, k), np.float32), np.full((nq, k), -1, np.int64)
        if nq == 0 or k == 0:
            return scores, labels
        expr = f"face_id in {[int(f) for f in params.allowed]}" if params.allowed is not None else ""
        search_params = {"metric_type": "IP", "params": {"ef": max(HNSW_EF, params.ef_search, k)} if self.target.index_type == "HNSW" else {}}
        try:
            hits = self.client.search(self.name, data=queries.tolist(), limit=k, filter=expr, search_params=search_params,
                                      anns_field="vector", consistency_level=SESSION)
        except Exception as err:  # the caller can retry; nothing is wrong with its request
            raise Unavailable(f"the vector store {self.target.spec} did not answer ({type(err).__name__}: {err}); retry shortly") from None
        for row, found in enumerate(hits):
            for col, hit in enumerate(found[:k]):
                labels[row, col] = int(hit["id"] if "id" in hit else hit["face_id"])  # Milvus Lite names the key field
                scores[row, col] = float(hit["distance"])
        return scores, labels

    def search_subset(self, queries, k, allowed):
        present, vectors = self.reconstruct(allowed)
        return exact_top_k(np.asarray(queries, np.float32), vectors, present, k)

    def reconstruct(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep, rows = [], []
        ids = [int(f) for f in np.asarray(ids, np.int64)]
        for start in range(0, len(ids), BATCH):
            for r in self.client.query(self.name, filter=f"face_id in {ids[start:start + BATCH]}", output_fields=["face_id", "vector"],
                                       consistency_level=STRONG):
                keep.append(int(r["face_id"]))
                rows.append(np.asarray(r["vector"], np.float32))
        return np.asarray(keep, np.int64), np.asarray(rows, np.float32).reshape(-1, self.dim)

    def __len__(self) -> int:
        return self._count

    def ids(self) -> np.ndarray:
        out: list[int] = []
        iterator = self.client.query_iterator(self.name, batch_size=BATCH, filter="face_id >= 0", output_fields=["face_id"],
                                              consistency_level=STRONG)
        while rows := iterator.next():
            out += [int(r["face_id"]) for r in rows]
        iterator.close()
        return np.asarray(sorted(out), np.int64)

    def after_replay(self) -> None:
        self.recount()

    def recount(self) -> None:
        """The number of live rows, read at Strong consistency (after a restore or a replay: it may re-send faces Milvus had)."""
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"], consistency_level=STRONG)
        self._count = int(rows[0]["count(*)"]) if rows else 0

    def state(self):
        """What a snapshot records: the collection, flushed, so its rows outlive a Milvus restart."""
        self.client.flush(self.name)
        return {"collection": self.name}, {}

    def purge(self) -> dict:
        """After a removal: flush the deletes and ask for a compaction; report what Milvus said."""
        out = {"milvus_collection": self.name, "flushed": False, "compaction": "not requested"}
        try:
            self.client.flush(self.name)
            out["flushed"] = True
            job = self.client.compact(self.name)
            out["compaction"] = f"requested (job {job}): {self.client.get_compaction_state(job)}"
        except Exception as err:  # Milvus Lite has no compaction; say so rather than claim one
            out["compaction"] = f"not available: {type(err).__name__}: {err}"
        return out

    def release(self) -> None:
        """Drop its Milvus collection."""
        try:
            self.client.drop_collection(self.name)
        except Exception:  # the next start drops what no segment uses (MilvusTarget.drop_unused)
            log.warning("could not drop Milvus collection %s now; the next start drops it", self.name, exc_info=True)
