"""IvfIndex.train with 64 or 40 training vectors a list: k-means time, calibrated nprobe, recall, speed."""
import sys, time, inspect, textwrap
import numpy as np
sys.path.insert(0, ".")
import faiss
from bench.synthetic import gallery
import facebank.index.vectors as V
from facebank.index.vector_source import VectorSource
n, per = int(sys.argv[1]), 10
g = gallery(n // per, seed=11)
x = g.faces(np.repeat(np.arange(n // per), per), np.random.default_rng(12)); ids = np.arange(n, dtype=np.int64)
q = g.faces(np.random.default_rng(5).integers(0, n // per, 2000), np.random.default_rng(6))
flat = faiss.IndexFlatIP(512); flat.add(x); _, truth = flat.search(q, 10); del flat
src = textwrap.dedent(inspect.getsource(V.IvfIndex.train.__func__))
for per_list in (64, 40):
    ns = dict(V.__dict__)
    exec(src.replace("64 * nlist", f"{per_list} * nlist").replace("@classmethod\n", ""), ns)
    tr = faiss.IndexIVF.train; spent = {}
    def timed(self, *a):
        t = time.perf_counter(); out = tr(self, *a); spent["k"] = time.perf_counter() - t; return out
    faiss.IndexIVF.train = timed
    t = time.perf_counter(); ix = ns["train"](V.IvfIndex, 512, VectorSource.of(ids, x)); build = time.perf_counter() - t
    faiss.IndexIVF.train = tr
    t = time.perf_counter()
    for s in range(0, len(q), 64): ix.search(q[s:s+64], 10)
    qps = len(q) / (time.perf_counter() - t)
    _, found = ix.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    print(f"{per_list}/list: nlist {ix.nlist} kmeans {spent['k']:.1f} s build {build:.1f} s nprobe {ix.default_nprobe} calibrated {ix.calibrated_recall:.4f} recall@10 {recall:.4f} batch-64 {qps:.0f} q/s", flush=True)
