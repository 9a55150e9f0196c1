"""An IVF's centroids trained on a sample of its collection, the sample held once.

k-means takes 64 faces a list (IvfIndex.trained_empty): at 2M faces and 4,096
lists 262,144 faces, 512 MB as float32, beside 8-bit lists of 1 GB. Once a
retrain moved the index in place instead of building a second one
(ivf_retrain.py), the sample was its largest cost, and it was held twice while
the faces near the calibration queries were dropped from it (a copy of the
rest): a retrain of that index peaked at 2.03x its memory, and at 1.29x with what follows
(bench/results/committed-2026-12-03-retrain-in-place-cpu2). Now rows are
dropped in place, and for the 8-bit kind the sample is kept as the 8-bit codes
its lists hold (a quarter of the size), which FAISS's k-means decodes block by
block (`Clustering.train_encoded`): the centroids are those the decoded sample
gives, and the lists hold exactly those decoded values. The rows are drawn as
from every row but the calibration queries, without listing those rows.
"""

from __future__ import annotations

import faiss
import numpy as np

from facebank.index.vector_source import FETCH_SPREAD, VectorSource

DECODE_BLOCK = 32_768  # 8-bit sample rows decoded at once (64 MB of float32 at 512-d)
SQ8_RANGE = np.array([-1.0, 2.0], np.float32)  # (min, width): every value of a unit vector lies in [-1, 1]


class Sq8Codec:
    """The 8-bit codes of an "ivf_sq8" index's lists (FAISS encodes them without the
    list's centroid), for a sample kept in them."""

    def __init__(self, dim: int) -> None:
        self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT)
        fix_sq8_range(self.index.sq)
        self.index.is_trained = True

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return self.index.sa_encode(np.ascontiguousarray(vectors, np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.index.sa_decode(np.ascontiguousarray(codes))


def fix_sq8_range(sq: faiss.ScalarQuantizer) -> None:
    """Codes over the fixed range [-1, 1]. A range learned from the sample clipped people
    enrolled after training (score errors up to 0.09 measured, against 0.008 with it)."""
    faiss.copy_array_to_vector(SQ8_RANGE, sq.trained)


def sample_rows(rng: np.random.Generator, n: int, held_out: np.ndarray, size: int) -> np.ndarray:
    """`size` rows of range(n) outside `held_out` (sorted, distinct), ascending: the draw of
    rng.choice(np.setdiff1d(np.arange(n), held_out), size, replace=False), sorted, without
    listing the other rows (the ranks among them are mapped to rows)."""
    ranks = rng.choice(n - len(held_out), size=size, replace=False)
    shift = np.asarray(held_out, np.int64) - np.arange(len(held_out))
    return np.sort(ranks + np.searchsorted(shift, ranks, side="right"))


def take_sample(source: VectorSource, rows: np.ndarray, codec: Sq8Codec | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the faces at `rows` still present: float32, or with `codec` its
    codes. Read FETCH_SPREAD faces at a time, so that the float32 sample is never held whole
    beside its codes, and the catalog pages a fetch reads are handed back after each one
    (store._segment_source): read at once, a 1M-face catalog's 262,144-face sample
    left 2.3 GB of them resident until it ended."""
    out = np.empty((len(rows), source.dim), np.uint8 if codec is not None else np.float32)
    ids, at, step = [], 0, min(source.chunk, FETCH_SPREAD)   # one fetch each: no chunk-sized array between
    for start in range(0, len(rows), step):
        found, vectors = source.take(rows[start:start + step])
        out[at:at + len(found)] = codec.encode(vectors) if codec is not None else vectors
        ids.append(found)
        at += len(found)
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), out[:at]


def drop_rows(ids: np.ndarray, sample: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`ids` and `sample` without the rows `drop`; the sample's kept rows are moved down
    in its own buffer, a block at a time (a kept row moves to a row at or before it, read
    before anything is written over it), instead of copied whole."""
    keep = np.ones(len(sample), bool)
    keep[drop] = False
    kept = np.flatnonzero(keep)
    for start in range(0, len(kept), DECODE_BLOCK):
        rows = kept[start:start + DECODE_BLOCK]
        sample[start:start + len(rows)] = sample[rows]
    return ids[kept], sample[:len(kept)]


def train_lists(index: faiss.IndexIVF, sample: np.ndarray, codec: Sq8Codec | None) -> None:
    """Train `index`'s centroids (FAISS's k-means with the index's own parameters) on the
    float32 `sample`, or on its 8-bit codes decoded block by block with `codec`."""
    if codec is None:
        index.train(np.ascontiguousarray(sample, np.float32))
    else:
        clustering = faiss.Clustering(index.d, index.nlist, index.cp)
        clustering.decode_block_size = DECODE_BLOCK
        index.quantizer.reset()
        clustering.train_encoded(np.ascontiguousarray(sample, np.uint8), codec.index, index.quantizer)
        index.is_trained = True
    if isinstance(index, faiss.IndexIVFScalarQuantizer):
        fix_sq8_range(index.sq)


def decoded_blocks(sample: np.ndarray, codec: Sq8Codec | None):
    """(first row, float32 rows) of the sample, a block at a time when it is held as codes."""
    if codec is None:
        yield 0, sample
        return
    for start in range(0, len(sample), DECODE_BLOCK):
        yield start, codec.decode(sample[start:start + DECODE_BLOCK])
