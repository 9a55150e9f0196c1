"""IvfIndex.add against add_with_ids on a 100k-face IVF-SQ8: 2,000 single faces, then 18 batches of 1,000 (run from the project root; output in add_speed.txt)."""
import sys, time, numpy as np
sys.path.insert(0, "tests")
from test_ivf_growth import unit_vectors, CPU
from facebank.index.vector_source import VectorSource
from facebank.index.vectors import tune_faiss
tune_faiss()
dim, n = 512, 100_000
x = unit_vectors(n + 20_000, dim, seed=5); ids = np.arange(1, len(x) + 1, dtype=np.int64)
for mode in ("old", "new", "old", "new"):
    index = CPU.build("ivf_sq8", dim, VectorSource.of(ids[:n], x[:n]), nprobe=16)
    t = time.perf_counter()
    for s in range(n, n + 2000):
        if mode == "old": index.index.add_with_ids(x[s:s+1], ids[s:s+1])
        else: index.add(ids[s:s+1], x[s:s+1])
    one = (time.perf_counter() - t) / 2000
    t = time.perf_counter()
    for s in range(n + 2000, len(x), 1000):
        if mode == "old": index.index.add_with_ids(x[s:s+1000], ids[s:s+1000])
        else: index.add(ids[s:s+1000], x[s:s+1000])
    batch = (time.perf_counter() - t) / 18
    print(mode, f"one face {one*1e6:.0f} us, batch of 1000 {batch*1e3:.1f} ms", index.nlist)
