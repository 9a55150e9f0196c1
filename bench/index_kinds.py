"""Index kinds side by side on one synthetic gallery: IVF-Flat and IVF-SQ8 (8-bit
codes over [-1, 1]) as facebank builds them (IndexFactory: trained on a sample,
nprobe calibrated on held-out people), each beside raw FAISS with the same index
type and nlist (`index_factory`) at the nprobe that gives facebank's recall.
Both are trained with the first half of the people and the second half is added
after, as people enrolled after an index was trained are; queries are new faces
of people of both halves. Per kind: bytes per face of the index, build time, recall@10
of faces against exact search, how far a score moves from the exact cosine, and
batch-64 and single-query speed.

This measures the index layer (what a segment searches), not the transports:
the search section does those."""

from __future__ import annotations

import time

import numpy as np

from bench.search import _nprobe_for_recall, _recall, speed_row, timed
from bench.synthetic import gallery

SIZES: list[int] = []   # --kinds-sizes; default 1,000,000 (20,000 with --quick)
PER_ID = 10
QUERIES = 1024
KINDS = ("ivf", "ivf_sq8")
RAW = {"ivf": "Flat", "ivf_sq8": "SQ8"}


def run(quick: bool, log=print) -> dict:
    rows = []
    for n in SIZES or ([20_000] if quick else [1_000_000]):
        rows += one_size(n, log)
    return {"index_kinds": rows}


def one_size(n: int, log) -> list[dict]:
    import faiss

    from facebank.index.factory import IndexFactory
    from facebank.index.vector_source import VectorSource
    from facebank.index.vectors import SearchParams

    people = n // PER_ID
    g = gallery(people)
    rng = np.random.default_rng(7)
    x = g.faces(np.repeat(np.arange(people), PER_ID), rng)
    ids = np.arange(1, n + 1, dtype=np.int64)
    first = n // 2  # the index is trained with the first half; the second half is enrolled after it
    q = g.faces(rng.integers(0, people, QUERIES), rng)  # people of both halves
    truth = faiss.knn(q, x, 10, faiss.METRIC_INNER_PRODUCT)[1] + 1
    batches = [q[i : i + 64] for i in range(0, QUERIES, 64)]
    singles = [q[i : i + 1] for i in range(256)]
    rows = []
    for kind in KINDS:
        log(f"index kinds: {kind} at {n:,}")
        started = time.perf_counter()
        index = IndexFactory("cpu").build(kind, x.shape[1], VectorSource.of(ids[:first], x[:first]))
        build_s = time.perf_counter() - started
        index.add(ids[first:], x[first:])
        found_scores, found = index.search(q, 10)
        exact = np.einsum("qd,qkd->qk", q, x[np.clip(found - 1, 0, n - 1)])
        error = np.abs(found_scores - exact)[found > 0]
        common = {"kind": kind, "n": n, "nlist": index.nlist, "nprobe": index.default_nprobe,
                  "bytes_per_face": round(len(faiss.serialize_index(index.index)) / n), "build_s": round(build_s, 1),
                  "recall_at_10": round(_recall(found, truth), 4), "score_error_max": round(float(error.max()), 4),
                  "score_error_p99": round(float(np.quantile(error, 0.99)), 4)}
        search = lambda b: index.search(b, 10, SearchParams())  # noqa: E731
        for batch, work in ((64, batches), (1, singles)):
            rows.append({**speed_row(f"facebank-{kind}", n, batch, timed(search, work, 20.0)), **common})
        index = None  # freed before the next kind is built

        raw = faiss.index_factory(x.shape[1], f"IVF{common['nlist']},{RAW[kind]}", faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        raw.train(x[np.random.default_rng(0).choice(first, min(first, 64 * common["nlist"]), replace=False)])
        raw.add_with_ids(x, ids)
        raw_build = time.perf_counter() - started
        nprobe, recall = _nprobe_for_recall(raw, q, truth, common["recall_at_10"], max(1, common["nprobe"] // 4))
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        raw_search = lambda b: raw.search(b, 10, params=params)  # noqa: E731
        raw_common = {**common, "nprobe": nprobe, "recall_at_10": round(recall, 4), "build_s": round(raw_build, 1),
                      "bytes_per_face": round(len(faiss.serialize_index(raw)) / n), "score_error_max": "", "score_error_p99": ""}
        for batch, work in ((64, batches), (1, singles)):
            rows.append({**speed_row(f"faiss-{RAW[kind].lower()}", n, batch, timed(raw_search, work, 20.0)), **raw_common})
        raw = None
    return rows
