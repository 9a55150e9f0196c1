"""What a retrain costs in memory: the second index built beside the live one (IvfIndex.train
with `like`, the code before ivf_retrain.py) against the live one moved onto its new centroids
list by list (IvfIndex.trained_empty + ivf_retrain.move_onto).

`python retrain_peak.py build DIR` trains and fills a 2M-face IVF-SQ8 index as a rebuild does
(4,096 lists) over synthetic people (bench.synthetic, 10 faces each) kept in a float32 memmap
under DIR, and writes it there. `python retrain_peak.py retrain DIR beside|move` reads that
index (every list exactly its size, as after a start from a snapshot), serves it as a segment,
retrains it as a forget's retrain does (a new sample, the same lists, nprobe calibrated and
kept at least the old one's), with batch-64 searches running through the segment meanwhile,
and prints one JSON line: anonymous memory (RssAnon, sampled every 10 ms) before, at its peak
and after (each 'before'/'after' after malloc_trim), the seconds it took, the searches served
meanwhile and their slowest, and the recall of the new index at its nprobe against exact
search over the same (decoded) vectors."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, ".")  # run from the repository root
from bench.synthetic import gallery  # noqa: E402
from facebank.index.ivf_retrain import move_onto  # noqa: E402
from facebank.index.records import IndexSettings  # noqa: E402
from facebank.index.resident_pages import trim_heap  # noqa: E402
from facebank.index.segments import Segment  # noqa: E402
from facebank.index.vector_source import VectorSource  # noqa: E402
from facebank.index.vectors import TARGET_RECALL, IvfIndex, tune_faiss  # noqa: E402

N, PER_ID, DIM = 2_000_000, 10, 512


def anon_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))


def faces(run: Path) -> np.ndarray:
    path = run / "faces.f32"
    if not path.exists():
        g = gallery(N // PER_ID, seed=11)
        out = np.lib.format.open_memmap(path, "w+", np.float32, (N, DIM))
        for start in range(0, N, 100_000):
            labels = np.arange(start, start + 100_000) // PER_ID
            out[start:start + 100_000] = g.faces(labels, np.random.default_rng(12 + start))
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def source_of(x: np.ndarray) -> VectorSource:
    return VectorSource(np.arange(N, dtype=np.int64), DIM, lambda wanted: (wanted, np.ascontiguousarray(x[wanted])), chunk=32_768)


def build(run: Path) -> None:
    tune_faiss()
    x = faces(run)
    t = time.perf_counter()
    index = IvfIndex.train(DIM, source_of(x), family="ivf_sq8")
    faiss.write_index(index.index, str(run / "ivf_sq8_2m.index"))
    (run / "built.json").write_text(json.dumps({"nprobe": index.default_nprobe, "calibrated_recall": index.calibrated_recall}))
    print(json.dumps({"built_s": round(time.perf_counter() - t, 1), "nlist": index.nlist, "ntotal": len(index),
                      "nprobe": index.default_nprobe, "calibrated_recall": round(index.calibrated_recall, 4)}))


def retrain(run: Path, mode: str) -> None:
    tune_faiss()
    x = faces(run)
    info = json.loads((run / "built.json").read_text())
    faiss_index = faiss.read_index(str(run / "ivf_sq8_2m.index"))
    faiss_index.set_direct_map_type(faiss.DirectMap.Hashtable)
    old = IvfIndex(DIM, faiss_index, np.arange(0, N, 8, dtype=np.int64), trained_n=N, nprobe=info["nprobe"],
                   calibrated_recall=info["calibrated_recall"])
    segment = Segment(1, "enrolled", DIM, IndexSettings(kind="ivf"), old, retrain_pending=True)
    source = source_of(x)
    trim_heap()
    before = anon_kb()
    peak, done, searches = [before], threading.Event(), []
    probe = np.ascontiguousarray(x[5::N // 64][:64])

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anon_kb())
            time.sleep(0.01)

    def search() -> None:
        while not done.is_set():
            t = time.perf_counter()
            segment.search(probe, 10)
            searches.append(time.perf_counter() - t)

    threads = [threading.Thread(target=sample), threading.Thread(target=search)]
    for thread in threads:
        thread.start()
    t = time.perf_counter()
    if mode == "beside":
        fresh = IvfIndex.train(DIM, source, like=old, family="ivf_sq8", seed=1)
        with segment.lock.write():
            segment.index = fresh
        del old
    else:
        fresh, calibration = IvfIndex.trained_empty(DIM, source, like=old, family="ivf_sq8", seed=1)
        del old
        assert move_onto(segment, fresh, calibration, source.vectors_of, target_recall=TARGET_RECALL, keeps=True, stop=lambda: False,
                         current=lambda: True)
    took = time.perf_counter() - t
    done.set()
    for thread in threads:
        thread.join()
    trim_heap()
    after = anon_kb()
    queries = np.ascontiguousarray(x[7::N // 500][:500])
    stored = fresh.index.reconstruct_batch(np.arange(N, dtype=np.int64))  # what the lists hold, decoded: 4 GB
    _, truth = faiss.knn(queries, stored, 10, metric=faiss.METRIC_INNER_PRODUCT)
    del stored
    _, got = fresh.search(queries, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())]))
    print(json.dumps({"mode": mode, "anon_kb": {"before": before, "peak": peak[0], "after": after},
                      "peak_over_before": round(peak[0] / before, 3), "retrain_s": round(took, 1),
                      "nprobe": {"old": info["nprobe"], "new": fresh.default_nprobe}, "calibrated_recall": round(fresh.calibrated_recall, 4),
                      "recall_at_10_vs_exact_on_stored": round(recall, 4), "searches_meanwhile": len(searches),
                      "search_s": {"p50": round(float(np.median(searches)), 3), "max": round(max(searches), 3)} if searches else {},
                      "codes_mb": round(N * DIM / 2**20, 1)}))


if __name__ == "__main__":
    what, run = sys.argv[1], Path(sys.argv[2])
    if what == "build":
        build(run)
    else:
        retrain(run, sys.argv[3])
