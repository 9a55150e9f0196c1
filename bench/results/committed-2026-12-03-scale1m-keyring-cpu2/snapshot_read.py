"""Where a snapshot read's time goes: an IVF-Flat of N random 512-d faces written and read back
(DataKey.open timed inside read_snapshot). Run from the project root:
python bench/results/committed-2026-12-03-scale1m-keyring-cpu2/snapshot_read.py 300000"""
import os, sys, time, tempfile
from pathlib import Path
import numpy as np, faiss
sys.path.insert(0, ".")
from facebank.index import snapshot as S
from facebank.index.keyring import DataKey
from facebank.index.vectors import FaissBlob, read_faiss

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
d, nlist = 512, 2048
rng = np.random.default_rng(0)
q = faiss.IndexFlatIP(d); c = rng.standard_normal((nlist, d)).astype("f4"); faiss.normalize_L2(c); q.add(c)
index = faiss.IndexIVFFlat(q, d, nlist, faiss.METRIC_INNER_PRODUCT); index.is_trained = True
for s in range(0, n, 100_000):
    x = rng.standard_normal((min(100_000, n - s), d)).astype("f4"); faiss.normalize_L2(x)
    index.add_with_ids(x, np.arange(s, s + len(x)))
del x
key = DataKey(os.urandom(32), 7)
path = Path(tempfile.mkdtemp()) / "t.snap"
t = time.perf_counter(); S.stage_snapshot(path, key, {"k": 1}, {"faiss": FaissBlob(index)}).commit(); print("write", round(time.perf_counter() - t, 2), "s", path.stat().st_size / 2**30, "GB")
del index
spent = [0.0]
real = DataKey.open
def timed(self, blob, aad):
    t0 = time.perf_counter(); out = real(self, blob, aad); spent[0] += time.perf_counter() - t0; return out
DataKey.open = timed
for r in range(3):
    spent[0] = 0
    t = time.perf_counter(); _, e = S.read_snapshot(path, key, {"faiss": read_faiss}); total = time.perf_counter() - t
    print(f"read {total:.2f} s, decrypt {spent[0]:.2f} s ({path.stat().st_size / 2**30 / spent[0]:.2f} GB/s)", flush=True)
    del e
