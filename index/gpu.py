"""Vector search on a GPU.

Two ways, chosen by what is installed:
- faiss-gpu: the CPU index is cloned to the GPU (GpuIndexFlatIP, GpuIndexIVFFlat;
  CAGRA for HNSW-like graphs with faiss-gpu-cuvs);
- torch with CUDA only: `TorchExactIndex`, an exact search in fp16. Brute force
  streams the gallery once per query batch, so for batches of up to a few
  hundred queries it is bound by memory bandwidth, not arithmetic: 1M x 512
  fp16 is 1 GB, about 0.3 ms at an H100's 3.35 TB/s.

On a GPU, "auto" means exact search while the gallery fits in GPU memory:
exact is both faster than IVF on the CPU and perfectly accurate.
"""

from __future__ import annotations

import numpy as np

from facebank.index.top_k import exact_top_k
from facebank.index.vectors import SearchParams, VectorIndex


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def faiss_gpus() -> int:
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def search_device(preference: str) -> str:
    """'cuda' when asked for (or 'auto') and a GPU search backend exists, else 'cpu'."""
    if preference == "cpu":
        return "cpu"
    return "cuda" if (faiss_gpus() > 0 or torch_cuda_available()) else "cpu"


class TorchExactIndex(VectorIndex):
    """Exact inner-product search with torch (fp16 on CUDA; any dtype on the CPU for tests)."""

    kind, family = "gpu-exact", "flat"   # its kind says where it runs; its family, what it does (exact)

    def __init__(self, dim: int, *, device: str = "cuda", dtype: str = "float16", query_block: int = 1024) -> None:
        import torch

        super().__init__(dim)
        self.torch = torch
        self.device = device
        self.dtype = getattr(torch, dtype)
        self.query_block = query_block
        # Rows [0, n) of a buffer with room to grow, so that enrolling one identity at
        # a time does not copy the whole gallery on every add.
        self._buffer = torch.empty((0, dim), dtype=self.dtype, device=device)
        self._id_buffer = np.zeros(0, np.int64)
        self._n = 0

    @property
    def _vectors(self):
        return self._buffer[: self._n]

    @property
    def _ids(self) -> np.ndarray:
        return self._id_buffer[: self._n]

    def reserve(self, n: int) -> None:
        if n > len(self._buffer):
            self._grow(n)

    def _grow(self, room: int) -> None:
        n = self._n
        grown = self.torch.empty((room, self.dim), dtype=self.dtype, device=self.device)
        grown[:n] = self._buffer[:n]
        grown_ids = np.zeros(room, np.int64)
        grown_ids[:n] = self._id_buffer[:n]
        self._buffer, self._id_buffer = grown, grown_ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        new = self.torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).to(self.device, self.dtype).reshape(-1, self.dim)
        n, m = self._n, len(new)
        if n + m > len(self._buffer):
            self._grow(max(n + m, n + n // 2, 1024))  # grow by half: amortised O(1) per row
        self._buffer[n : n + m] = new
        self._id_buffer[n : n + m] = np.asarray(ids, np.int64)
        self._n = n + m

    def remove(self, ids: np.ndarray) -> int:
        gone = np.isin(self._ids, np.asarray(ids, np.int64))
        if gone.any():
            torch = self.torch
            self._buffer[torch.from_numpy(np.nonzero(gone)[0]).to(self.device)] = 0  # the vectors themselves, not only their rows
            keep = torch.from_numpy(np.nonzero(~gone)[0]).to(self.device)
            self._buffer = self._vectors.index_select(0, keep)  # a new, compact tensor: the old one is freed
            self._id_buffer = self._ids[~gone].copy()
            self._n = len(self._id_buffer)
        return int(gone.sum())

    def search(self, queries: np.ndarray, k: int, params: SearchParams = SearchParams()) -> tuple[np.ndarray, np.ndarray]:
        if params.allowed is not None:
            return self.search_subset(queries, k, params.allowed)
        torch = self.torch
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, np.float32)
        labels = np.full((nq, k), -1, np.int64)
        take = min(k, len(self._ids))
        if take == 0:
            return scores, labels
        with torch.inference_mode():
            for start in range(0, nq, self.query_block):
                q = torch.from_numpy(np.ascontiguousarray(queries[start : start + self.query_block], np.float32)).to(self.device, self.dtype)
                values, rows = self.top_k_on_device(q, take)
                scores[start : start + len(q), :take] = values.float().cpu().numpy()
                labels[start : start + len(q), :take] = self._ids[rows.cpu().numpy()]
        return scores, labels

    def top_k_on_device(self, queries, k: int):
        """(scores, gallery rows) of the k best for a block of queries already on
        the device in this index's dtype. The gallery is read once per call, which
        is what the memory-bandwidth bound counts; the scores stay in that dtype
        (widening a queries x gallery matrix first would cost more than the read)."""
        return self.torch.topk(queries @ self._vectors.T, k, dim=1)

    def search_subset(self, queries, k, allowed):
        rows = np.nonzero(np.isin(self._ids, np.asarray(allowed, np.int64)))[0]
        vectors = self._vectors[self.torch.from_numpy(rows).to(self.device)].float().cpu().numpy()
        return exact_top_k(np.asarray(queries, np.float32), vectors, self._ids[rows], k)

    def reconstruct(self, ids):
        rows = np.nonzero(np.isin(self._ids, np.asarray(ids, np.int64)))[0]
        return self._ids[rows], self._vectors[self.torch.from_numpy(rows).to(self.device)].float().cpu().numpy()

    def __len__(self) -> int:
        return self._n

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def state(self):
        return {"dtype": str(self.dtype).removeprefix("torch.")}, {"vectors": self._vectors.float().cpu().numpy(), "ids": self._ids.copy()}

    @classmethod
    def restore(cls, dim: int, info: dict, arrays: dict, device: str) -> "TorchExactIndex":
        index = cls(dim, device=device, dtype=info.get("dtype", "float16"))
        index.add(arrays["ids"], arrays["vectors"])
        return index


def faiss_to_gpu(index, device_id: int = 0):
    """Clone a CPU FAISS index (flat or IVF) onto a GPU with faiss-gpu."""
    import faiss

    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = True
    return faiss.index_cpu_to_gpu(resources, device_id, index, options)
