"""What faces added to a built 8-bit IVF cost in memory: FAISS's add_with_ids (the code
before ivf_growth.py) against IvfIndex.add (lists grown by an eighth).

`python list_growth.py build DIR` trains and fills a 2M-face IVF-SQ8 index as a rebuild
does (IvfIndex.train: 4,096 lists, nprobe fixed, so no calibration) over synthetic people
(bench.synthetic, 10 faces each) kept in a float32 memmap under DIR, and writes it there.
`python list_growth.py add DIR old|new BATCH` reads that index (every list exactly its size,
as after a rebuild or a start from a snapshot), adds 500k more faces (25%: the 8M -> 10M
stretch of the 10M load) BATCH at a time, and prints one JSON line: anonymous and total RSS
before and after (each after malloc_trim), the seconds the adds took."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, ".")  # run from the repository root
from bench.synthetic import gallery  # noqa: E402
from facebank.index.resident_pages import trim_heap  # noqa: E402
from facebank.index.vector_source import VectorSource  # noqa: E402
from facebank.index.vectors import IvfIndex, tune_faiss  # noqa: E402

BUILT, ADDED, PER_ID, DIM = 2_000_000, 500_000, 10, 512


def memory_kb() -> dict:
    with open("/proc/self/status") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("RssAnon", "VmRSS"))}
    return {"anon_kb": fields["RssAnon"], "rss_kb": fields["VmRSS"]}


def faces(run: Path) -> np.ndarray:
    path = run / "faces.f32"
    n = BUILT + ADDED
    if not path.exists():
        g = gallery(n // PER_ID, seed=11)
        out = np.lib.format.open_memmap(path, "w+", np.float32, (n, DIM))
        for start in range(0, n, 100_000):
            labels = np.arange(start, start + 100_000) // PER_ID
            out[start:start + 100_000] = g.faces(labels, np.random.default_rng(12 + start))
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def build(run: Path) -> None:
    x = faces(run)
    ids = np.arange(BUILT, dtype=np.int64)
    source = VectorSource(ids, DIM, lambda wanted: (wanted, np.ascontiguousarray(x[wanted])), chunk=50_000)
    t = time.perf_counter()
    index = IvfIndex.train(DIM, source, nprobe=128, family="ivf_sq8")
    faiss.write_index(index.index, str(run / "ivf_sq8_2m.index"))
    print(json.dumps({"built_s": round(time.perf_counter() - t, 1), "nlist": index.nlist, "ntotal": len(index)}))


def add(run: Path, mode: str, batch: int) -> None:
    tune_faiss()
    x = faces(run)
    index = IvfIndex(DIM, faiss.read_index(str(run / "ivf_sq8_2m.index")), np.zeros(0, np.int64), trained_n=BUILT, nprobe=128)
    trim_heap()
    before = memory_kb()
    t = time.perf_counter()
    for start in range(BUILT, BUILT + ADDED, batch):
        ids = np.arange(start, min(start + batch, BUILT + ADDED), dtype=np.int64)
        vectors = np.ascontiguousarray(x[ids[0]:ids[-1] + 1])
        if mode == "old":
            index.index.add_with_ids(vectors, ids)
        else:
            index.add(ids, vectors)
    took = time.perf_counter() - t
    trim_heap()
    after = memory_kb()
    probe = np.ascontiguousarray(x[BUILT + ADDED - 1000::50])
    _, found = index.search(probe, 1)
    print(json.dumps({"mode": mode, "batch": batch, "before": before, "after": after, "added_s": round(took, 1),
                      "codes_added_mb": round(ADDED * DIM / 2**20, 1), "codes_built_mb": round(BUILT * DIM / 2**20, 1),
                      "found_self": float((found[:, 0] == np.arange(BUILT + ADDED - 1000, BUILT + ADDED, 50)).mean())}))


if __name__ == "__main__":
    what, run = sys.argv[1], Path(sys.argv[2])
    if what == "build":
        build(run)
    else:
        add(run, sys.argv[3], int(sys.argv[4]))
