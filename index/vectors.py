"""Vector indexes over unit-norm embeddings (inner product = cosine similarity).

`VectorIndex` is the interface every backend implements; ids are face ids
(int64). Exact (flat) and IVF (flat or 8-bit codes) come from FAISS on the CPU;
HNSW lives in `hnsw_index.py`, GPU backends in `gpu.py`, and `factory.py`
chooses among them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import faiss
import numpy as np

from facebank.index.ivf_calibration import (  # noqa: F401
    RELEVANT_SCORE, TARGET_RECALL, Calibration, NearestOthers, calibrate_nprobe, keep_coverage, relevant_in_sample,
)
from facebank.index.ivf_fill import fill_exactly
from facebank.index.ivf_growth import ListRoom
from facebank.index.ivf_training import Sq8Codec, decoded_blocks, drop_rows, sample_rows, take_sample, train_lists
from facebank.index.resident_pages import zero_past_size
from facebank.index.top_k import as_f32, as_i64, exact_top_k, selector_for
from facebank.index.vector_source import VectorSource

CALIBRATION_QUERIES = 256  # faces of the collection that calibrate a new IVF's nprobe
COVERAGE_QUERIES = 2048    # ...and that compare a retrain's centroids with the ones it replaces
GATHER_MAX = 5000  # exact search of at most this many ids fetches their vectors (10 MB at 512-d)


def tune_faiss() -> None:
    """FAISS 1.15 ships with distance_compute_blas_threshold = 128000, which keeps
    exact search (IndexFlat, and the IVF coarse quantizer) off BLAS for any batch
    of fewer queries than that: on 2 cores, 64 queries against 20k vectors take
    120 ms instead of 14 ms. Back to the historical 20. Process-wide: called at
    server start-up (server/runtime.py), not on import."""
    faiss.cvar.distance_compute_blas_threshold = 20


class FaissBlob:
    """A FAISS index as a snapshot entry, serialised straight into the snapshot's
    sealed chunks (snapshot.Streamed): faiss.serialize_index grows a buffer of the
    whole index and copies it again, up to three copies at the peak of a snapshot.
    The price: the index is serialised twice, once only to count its bytes (the
    header, which every chunk's seal binds, states the size first)."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        self.nbytes = 0
        self.write_to(self._count)

    def _count(self, piece: bytes) -> None:
        self.nbytes += len(piece)

    def write_to(self, sink) -> None:
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(sink))


def read_faiss(read) -> faiss.Index:
    """A FAISS index from a snapshot stream (`read(n)`: up to n bytes), with no copy of its bytes."""
    return faiss.read_index(faiss.PyCallbackIOReader(read))


FAISS_READERS = {"faiss": read_faiss, "side": read_faiss}  # the entries a snapshot streams into FAISS


@dataclass(frozen=True)
class SearchParams:
    nprobe: int = 0
    ef_search: int = 0
    allowed: np.ndarray | None = None   # restrict to these ids


class VectorIndex(ABC):
    kind: str = ""     # what it is: flat, ivf, hnsw, gpu-exact, ...
    family: str = ""   # what it does: flat (exact), ivf or hnsw
    external = False   # kept outside this process (Milvus): other processes may search it

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (missing ones are ignored); returns how many were present."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, params: SearchParams = SearchParams()) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each nq x k, best first; missing results have id -1."""

    @abstractmethod
    def __len__(self) -> int:
        """Live (searchable) vectors."""

    def reserve(self, n: int) -> None:
        """Make room for n vectors in all before a build adds them (where the kind grows by copying)."""

    def search_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search among `allowed` ids only (for small metadata filters)."""
        present, vectors = self.reconstruct(allowed)
        return exact_top_k(as_f32(queries), vectors, present, k)

    def reconstruct(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids present, their vectors); ids not in the index are skipped."""
        keep, rows = [], []
        for face_id in as_i64(ids).tolist():
            try:
                rows.append(self.index.reconstruct(face_id))
            except RuntimeError:  # not (yet, or any more) in the index
                continue
            keep.append(face_id)
        vectors = np.asarray(rows, np.float32).reshape(-1, self.dim)
        return np.asarray(keep, np.int64), vectors

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every live id."""

    @property
    def training_ids(self) -> np.ndarray:
        """Ids of the vectors a trained structure (IVF centroids) was learned from."""
        return np.zeros(0, np.int64)

    def trained_on(self, ids) -> bool:
        """Was a trained structure it searches with learned from any of these faces?"""
        return bool(np.isin(as_i64(ids), self.training_ids).any())

    @property
    def stored_kind(self) -> str:
        """The kind its snapshot restores as."""
        return self.kind

    @property
    def needs_rebuild(self) -> bool:
        """True while the structure still reflects removed vectors (HNSW graph)."""
        return False

    @abstractmethod
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Everything needed to restore the index: (json-able info, named arrays)."""

    def after_replay(self) -> None:
        """Called once the change log's tail has been replayed onto a restored index."""

    def purge(self) -> dict:
        """After a removal, make the store drop what it removed; returns what it said ({}: nothing to do)."""
        return {}

    def release(self) -> None:
        """No segment uses this index any more (replaced, or its collection dropped)."""


class FlatIndex(VectorIndex):
    """Exact search: every query scores every vector."""

    kind = family = "flat"

    def __init__(self, dim: int, faiss_index: faiss.Index | None = None) -> None:
        super().__init__(dim)
        self.index = faiss_index or faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(as_f32(vectors), as_i64(ids))

    def remove(self, ids: np.ndarray) -> int:
        """The room past the new size is zeroed (resident_pages.zero_past_size)."""
        flat = faiss.downcast_index(self.index.index)
        before = int(flat.ntotal)
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(as_i64(ids))))
        if removed and isinstance(flat, faiss.IndexFlatCodes):
            zero_past_size(flat.codes.data(), int(flat.ntotal) * flat.code_size, before * flat.code_size)
        return removed

    def search(self, queries, k, params=SearchParams()):
        sel = selector_for(params.allowed)
        sp = faiss.SearchParameters(sel=sel) if sel is not None else None
        return self.index.search(as_f32(queries), k, params=sp)

    def search_subset(self, queries, k, allowed):
        # Exact search is exact with a selector too: one pass in FAISS, no vector copied out.
        return self.search(queries, k, SearchParams(allowed=allowed))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def state(self):
        return {}, {"faiss": FaissBlob(self.index)}


IVF_FAMILIES = ("ivf", "ivf_sq8")


class IvfIndex(VectorIndex):
    """Inverted lists over k-means centroids learned from a sample of the collection.

    Two codes in the lists: the vectors themselves ("ivf", 4 bytes a value) or
    8-bit scalar-quantised over [-1, 1] ("ivf_sq8", 1 byte a value, a quarter of
    the memory; a score moves by a few thousandths, and nprobe is calibrated on
    the quantised lists against exact search, so the recall target holds with
    the loss)."""

    kind = family = "ivf"

    def __init__(self, dim: int, faiss_index: faiss.Index, training_ids: np.ndarray, *, trained_n: int, nprobe: int = 0,
                 calibrated_recall: float = 0.0) -> None:
        super().__init__(dim)
        self.index = faiss_index
        if isinstance(faiss_index, faiss.IndexIVFScalarQuantizer):
            self.kind = self.family = "ivf_sq8"
        self._training_ids = as_i64(training_ids)
        self.trained_n = trained_n  # vectors in the collection when trained: nlist was sized for it
        self.default_nprobe = nprobe or default_nprobe(self.index.nlist)
        self.calibrated_recall = calibrated_recall
        self._room = ListRoom()  # adds grow a list by a sixteenth (ivf_growth.py)

    @classmethod
    def train(cls, dim: int, source: VectorSource, *, nprobe: int = 0, seed: int = 0,
              target_recall: float = TARGET_RECALL, like: "IvfIndex | None" = None, family: str = "ivf") -> "IvfIndex":
        """Train on a sample of the collection, fill the lists from the source (ivf_fill), and
        (unless nprobe is given) choose the nprobe that reaches `target_recall` on the collection.
        `like` is the index a retrain replaces: its lists, the size they were chosen
        for, and at least its nprobe are kept (see SegmentManager.build_fresh).

        Memory: the sample (64 vectors a list), one chunk and the index being built, its
        lists allocated at their final size; the calibration's exact ground truth is
        gathered from the same chunks."""
        out, calibration = cls.trained_empty(dim, source, nprobe=nprobe, seed=seed, like=like, family=family)
        fill_exactly(out.index, source, calibration.feed if calibration is not None else None)
        if calibration is not None:
            calibration.finish(out, like, source.vectors_of, target_recall)
        return out

    @classmethod
    def trained_empty(cls, dim: int, source: VectorSource, *, nprobe: int = 0, seed: int = 0, like: "IvfIndex | None" = None,
                      family: str = "ivf") -> "tuple[IvfIndex, Calibration | None]":
        """Centroids learned from a sample of the source, no face in the lists yet, and (unless
        nprobe is given) the calibration to feed every face to once they are (see train)."""
        n = len(source)
        nlist = like.nlist if like is not None else nlist_for(n)
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False)) if not nprobe else np.zeros(0, np.int64)
        # Calibrate on people k-means does not see (ivf_calibration.calibrate_nprobe): the queries,
        # and the faces that matter to them, are kept out of the sample while enough others remain.
        hold_out = len(picks) > 0 and n - len(picks) >= 8 * nlist
        held = picks if hold_out else np.zeros(0, np.int64)
        codec = Sq8Codec(dim) if family == "ivf_sq8" else None  # the sample kept as the lists' 8-bit codes (ivf_training.py)
        sample_ids, sample = take_sample(source, sample_rows(rng, n, held, min(n - len(held), 64 * nlist)), codec)
        query_ids, queries = source.take(picks)
        calibrating = len(query_ids)  # those still present
        if hold_out:
            near = relevant_in_sample(queries, decoded_blocks(sample, codec))
            if len(sample) - len(near) >= 8 * nlist:  # k-means keeps enough points per list (at least 4 are allowed below)
                sample_ids, sample = drop_rows(sample_ids, sample, near)
        index = cls._untrained(dim, nlist, family, seed)
        train_lists(index, sample, codec)
        del sample
        out = cls(dim, index, sample_ids, trained_n=like.trained_n if like is not None else n, nprobe=nprobe or nlist)
        if nprobe:
            return out, None
        if like is not None:  # the faces keep_coverage compares the old and new centroids on
            cover_ids, cover = source.take(np.sort(rng.choice(n, size=min(COVERAGE_QUERIES, n), replace=False)))
            query_ids, queries = np.concatenate([query_ids, cover_ids]), np.concatenate([queries, cover])
        return out, Calibration(query_ids, queries, calibrating)

    @staticmethod
    def _untrained(dim: int, nlist: int, family: str, seed: int) -> faiss.IndexIVF:
        quantizer = faiss.IndexFlatIP(dim)
        if family == "ivf_sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT, False)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        # nlist_for gives 39 points per list; a retrain keeps its lists until the collection
        # shrinks 8x (then it is resized), so down to about 5 per list without FAISS's warning.
        index.cp.min_points_per_centroid = 4
        return index

    def add(self, ids, vectors, lists: np.ndarray | None = None):
        """`lists`: each face's list, when found already (ivf_retrain.py)."""
        self._room.add(self.index, as_i64(ids), as_f32(vectors), lists)

    def expect_sizes(self, sizes: np.ndarray | None) -> None:
        """The sizes adds are filling the lists to (ivf_growth.ListRoom.expect)."""
        self._room.expect(sizes)

    def remove(self, ids, scrub: bool = True):
        """The room past each shrunk list's size is zeroed (resident_pages.zero_past_size) unless
        `scrub` is False (a list moved whole, its buffer freed after: ivf_retrain.py)."""
        ids = as_i64(ids)  # the hashtable direct map removes by IDSelectorArray only
        invlists = self.index.invlists
        before = _list_sizes(invlists, self.nlist) if scrub else None
        removed = int(self.index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))))
        if removed and before is not None:
            after = _list_sizes(invlists, self.nlist)
            for list_no in np.nonzero(after < before)[0].tolist():
                zero_past_size(invlists.get_codes(list_no), int(after[list_no]) * invlists.code_size,
                               int(before[list_no]) * invlists.code_size)
        return removed

    def search_subset(self, queries, k, allowed):
        """Exact among `allowed`: a few thousand are fetched in one call through the
        direct map and scored; more are found by visiting every list with a selector."""
        allowed = as_i64(allowed)
        if len(allowed) <= GATHER_MAX:
            try:
                vectors = self.index.reconstruct_batch(allowed)
            except RuntimeError:  # one not in the index yet (its change not applied): the scan below skips it
                pass
            else:
                return exact_top_k(as_f32(queries), vectors, allowed, k)
        sel = selector_for(allowed)  # held here: the parameters point into it
        sp = faiss.SearchParametersIVF(nprobe=self.nlist, sel=sel)
        return self.index.search(as_f32(queries), k, params=sp)

    def search(self, queries, k, params=SearchParams()):
        sp = faiss.SearchParametersIVF(nprobe=params.nprobe or self.default_nprobe)
        sel = selector_for(params.allowed)
        if sel is not None:
            sp.sel = sel
        return self.index.search(as_f32(queries), k, params=sp)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        invlists = self.index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(self.index.nlist)
            if invlists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @property
    def training_ids(self) -> np.ndarray:
        return self._training_ids

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    def state(self):
        return {"nprobe": self.default_nprobe, "trained_n": self.trained_n, "calibrated_recall": self.calibrated_recall}, {"faiss": FaissBlob(self.index), "training_ids": self._training_ids}


def _list_sizes(invlists, nlist: int) -> np.ndarray:
    """Every list's size (2 ms for 4,096 lists, beside FAISS's own scan of them all for a removal)."""
    return np.fromiter(map(invlists.list_size, range(nlist)), np.int64, nlist)


def nlist_for(n: int) -> int:
    """IVF lists for n vectors: about 4 sqrt(n), a power of two, 16..65536, and
    at most n / 39 so that k-means has the points per centroid FAISS asks for."""
    if n < 39 * 16:
        return 16
    target = 2 ** round(math.log2(4 * math.sqrt(n)))
    cap = 2 ** int(math.log2(n // 39))
    return int(min(65536, max(16, min(target, cap))))


def default_nprobe(nlist: int) -> int:
    return int(max(8, nlist // 32))
