"""Which vector index a segment gets, built where: the one place that chooses.

The policy: exact search while a collection is small (below FLAT_MAX faces on
the CPU; on a GPU while the gallery fits its memory), IVF beyond, IVF with
8-bit codes from COMPRESS_MIN (a quarter of the memory), HNSW only when a
collection asks for it. Moving between kinds happens by a background
rebuild, with some hysteresis so a collection near the line does not flap.
"""

from __future__ import annotations

import numpy as np

from facebank.index.gpu import TorchExactIndex, faiss_gpus, faiss_to_gpu, search_device, torch_cuda_available
from facebank.index.hnsw_index import HnswIndex
from facebank.index.vector_source import VectorSource
from facebank.index.vectors import IVF_FAMILIES, FlatIndex, IvfIndex, VectorIndex

FLAT_MAX = 50_000          # CPU: exact below this many faces
COMPRESS_MIN = 2_000_000   # CPU: IVF lists hold 8-bit codes from this many (2M x 2 KB of float vectors = 4 GB)
GPU_EXACT_MAX = 20_000_000  # GPU: exact fp16 below this many (20M x 512 x 2 bytes = 20 GB)
MIN_IVF = 256              # fewer vectors than this cannot train IVF: stay exact


class IndexFactory:
    def __init__(self, device: str = "cpu", milvus=None) -> None:
        """milvus: a MilvusTarget (milvus_vectors.py) when the vectors live in Milvus, for every collection."""
        self.device = search_device(device)
        self.milvus = milvus

    @property
    def exact_max(self) -> int:
        return GPU_EXACT_MAX if self.device == "cuda" else FLAT_MAX

    def family_for(self, requested: str, n: int, current: str | None = None) -> str:
        """The index family a segment of n faces should have."""
        if self.milvus is not None:
            return "milvus"
        if requested != "auto":
            return "flat" if requested in IVF_FAMILIES and n < MIN_IVF else requested
        if current in IVF_FAMILIES:  # hysteresis: back to a lighter kind only well below its line
            if n < self.exact_max // 2:
                return "flat"
            return "ivf_sq8" if n >= COMPRESS_MIN or (current == "ivf_sq8" and n >= COMPRESS_MIN // 2) else "ivf"
        if n < self.exact_max:
            return "flat"
        return "ivf_sq8" if n >= COMPRESS_MIN else "ivf"

    def build(self, family: str, dim: int, source: VectorSource, *, nprobe: int = 0, ef_search: int = 0,
              like: VectorIndex | None = None, place: tuple[int, str] = (0, "")) -> VectorIndex:
        """An index of `family` over the source's faces, added chunk by chunk.
        `like`: the IVF index a retrain replaces (see IvfIndex.train); `place`: (collection id, segment)."""
        if family == "milvus":
            return self.milvus.build(*place, dim, source)
        if family in IVF_FAMILIES and len(source) >= MIN_IVF:
            like = getattr(like, "master", like)  # a GPU mirror's CPU master holds the centroids
            index: VectorIndex = IvfIndex.train(dim, source, nprobe=nprobe, like=like, family=family)
            return GpuMirror(index, faiss_to_gpu) if self.device == "cuda" and faiss_gpus() else index
        if family == "hnsw":
            index = HnswIndex(dim, ef_search=ef_search)
        elif self.device == "cuda" and faiss_gpus():
            index = GpuMirror(FlatIndex(dim), faiss_to_gpu)
        elif self.device == "cuda" and torch_cuda_available():
            index = TorchExactIndex(dim, device="cuda")
        else:
            index = FlatIndex(dim)
        return add_all(index, source)

    def restore(self, kind: str, dim: int, info: dict, arrays: dict) -> VectorIndex:
        """An index from a snapshot, placed on this machine's device (its FAISS entries
        already built from the stream: read_snapshot with vectors.FAISS_READERS)."""
        import faiss

        if (kind == "milvus") != (self.milvus is not None):
            raise ValueError(f"a {kind} snapshot where the vectors live in {'Milvus' if self.milvus else 'FAISS'}")
        if kind == "milvus":
            return self.milvus.restore(dim, info)
        if kind == "gpu-exact":
            if self.device == "cuda" and torch_cuda_available():
                return TorchExactIndex.restore(dim, info, arrays, "cuda")
            index = FlatIndex(dim)
            index.add(arrays["ids"], arrays["vectors"])
            return index
        if kind == "flat":
            index = FlatIndex(dim, arrays["faiss"])
        elif kind in IVF_FAMILIES:
            raw = arrays["faiss"]
            raw.set_direct_map_type(faiss.DirectMap.Hashtable)
            index = IvfIndex(dim, raw, arrays.get("training_ids", np.zeros(0, np.int64)), trained_n=int(info.get("trained_n", raw.ntotal)),
                             nprobe=info.get("nprobe", 0), calibrated_recall=float(info.get("calibrated_recall", 0.0)))
        elif kind == "hnsw":
            side = FlatIndex(dim, arrays["side"]) if "side" in arrays else None
            return HnswIndex(dim, arrays["faiss"], arrays.get("tombstones"), info.get("ef_search", 0), side)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        return GpuMirror(index, faiss_to_gpu) if self.device == "cuda" and faiss_gpus() else index


def add_all(index: VectorIndex, source: VectorSource) -> VectorIndex:
    """Every face of the source into an exact or graph index, chunk by chunk, with room
    made once for all of them (the GPU exact index otherwise grows by half as chunks
    come: up to 2.5x its vectors in GPU memory for a moment)."""
    index.reserve(len(source))
    for ids, vectors in source.chunks():
        index.add(ids, vectors)
    return index


class GpuMirror(VectorIndex):
    """A CPU FAISS index (the master: snapshots, removal) with a copy on the GPU
    for search. Adds go to both; a removal re-clones the copy (faiss-gpu cannot
    remove from every index type), so removed vectors leave the GPU at once.
    `clone` is the compute function: faiss_to_gpu in production, any cloner in tests."""

    def __init__(self, master: VectorIndex, clone) -> None:
        super().__init__(master.dim)
        self.master = master
        self.kind = f"gpu-{master.kind}"
        self.family = master.family
        self._clone = clone
        self._replica = clone(master.index)

    def add(self, ids, vectors):
        self.master.add(ids, vectors)
        self._replica.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))

    def remove(self, ids):
        removed = self.master.remove(ids)
        if removed:
            self._replica = self._clone(self.master.index)
        return removed

    def search(self, queries, k, params=None):
        from facebank.index.vectors import SearchParams

        params = params or SearchParams()
        if params.allowed is not None:
            return self.master.search(queries, k, params)
        if isinstance(self.master, IvfIndex):
            self._replica.nprobe = params.nprobe or self.master.default_nprobe
        return self._replica.search(np.ascontiguousarray(queries, np.float32), k)

    def search_subset(self, queries, k, allowed):
        return self.master.search_subset(queries, k, allowed)

    def reconstruct(self, ids):
        return self.master.reconstruct(ids)

    def __len__(self) -> int:
        return len(self.master)

    def ids(self) -> np.ndarray:
        return self.master.ids()

    @property
    def training_ids(self) -> np.ndarray:
        return self.master.training_ids

    @property
    def needs_rebuild(self) -> bool:
        return self.master.needs_rebuild

    @property
    def trained_n(self) -> int:
        return getattr(self.master, "trained_n", len(self))

    @property
    def nlist(self) -> int:
        return getattr(self.master, "nlist", 0)

    @property
    def default_nprobe(self) -> int:
        return getattr(self.master, "default_nprobe", 0)

    @property
    def calibrated_recall(self) -> float:
        return getattr(self.master, "calibrated_recall", 0.0)

    @property
    def stored_kind(self) -> str:
        return self.master.kind

    def state(self):
        return self.master.state()
