"""IvfIndex.train with FAISS's exact k-means assignment and with an HNSW over the centroids
doing it: train time, calibrated nprobe, recall, batch-64 speed. `python kmeans_hnsw.py N`."""
import sys, time
import numpy as np
sys.path.insert(0, ".")
import faiss
from bench.synthetic import gallery
from facebank.index.vectors import IvfIndex
from facebank.index.vector_source import VectorSource
n = int(sys.argv[1]); per = 10
g = gallery(n // per, seed=11)
labels = np.repeat(np.arange(n // per), per)
x = g.faces(labels, np.random.default_rng(12)); ids = np.arange(n, dtype=np.int64)
q = g.faces(np.random.default_rng(5).integers(0, n // per, 2000), np.random.default_rng(6))
flat = faiss.IndexFlatIP(512); flat.add(x); _, truth = flat.search(q, 10); del flat
real = IvfIndex._untrained
held = []
def with_hnsw(dim, nlist, family, seed):
    index = real(dim, nlist, family, seed)
    hnsw = faiss.IndexHNSWFlat(dim, 32); hnsw.hnsw.efSearch = 64; held.append(hnsw)
    index.clustering_index = hnsw
    return index
for name in ("exact", "hnsw"):
    IvfIndex._untrained = staticmethod(real if name == "exact" else with_hnsw)
    spent = {}
    tr = faiss.IndexIVF.train
    def timed(self, *a):
        t = time.perf_counter(); out = tr(self, *a); spent["kmeans"] = time.perf_counter() - t; return out
    faiss.IndexIVF.train = timed
    t = time.perf_counter()
    ix = IvfIndex.train(512, VectorSource.of(ids, x))
    build = time.perf_counter() - t
    faiss.IndexIVF.train = tr
    t = time.perf_counter()
    for s in range(0, len(q), 64):
        _, found = ix.search(q[s:s+64], 10)
    qps = len(q) / (time.perf_counter() - t)
    _, found = ix.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    print(f"{name}: nlist {ix.nlist} kmeans {spent['kmeans']:.1f} s build {build:.1f} s nprobe {ix.default_nprobe} "
          f"calibrated {ix.calibrated_recall:.4f} recall@10 {recall:.4f} batch-64 {qps:.0f} q/s", flush=True)
