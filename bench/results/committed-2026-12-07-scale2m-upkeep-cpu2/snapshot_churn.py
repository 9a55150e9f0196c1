"""Anonymous memory three snapshots of a 40,000-face IVF-Flat (80 MB) leave behind, with glibc's
mmap threshold dynamic or fixed at 4 MB, while CHURN threads (default 2) allocate and free
buffers of up to 1.6 MB: `CHURN=2 python snapshot_churn.py dynamic|fixed TMPDIR`."""
import sys
from pathlib import Path, threading, ctypes, os
import numpy as np
libc = ctypes.CDLL("libc.so.6")
if sys.argv[1] == "fixed":
    libc.mallopt(-3, 4 * 2**20)
import faiss
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from facebank.index.vectors import FaissBlob
from facebank.index.snapshot import stage_snapshot
from facebank.index.keyring import DataKey
from facebank.index.resident_pages import trim_heap
from pathlib import Path
def anon():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon"))
rng = np.random.default_rng(0)
x = rng.standard_normal((40_000, 512)).astype(np.float32)
q = faiss.IndexFlatIP(512); ivf = faiss.IndexIVFFlat(q, 512, 64, faiss.METRIC_INNER_PRODUCT)
ivf.train(x[:5000]); ivf.add(x); del x
key = DataKey(os.urandom(32), 1)
stop = threading.Event()
def churn():
    r = np.random.default_rng(1)
    while not stop.is_set():
        keep = [np.empty(int(s)) for s in r.integers(1000, 200_000, 20)]
        del keep
threads = [threading.Thread(target=churn) for _ in range(int(os.environ.get("CHURN", "2")))]
trim_heap(); before = anon()
for t in threads: t.start()
for i in range(3):
    stage_snapshot(Path(sys.argv[2]) / f"s{i}.snap", key, {"kind": "ivf"}, {"faiss": FaissBlob(ivf)}).discard()
stop.set(); [t.join() for t in threads]
print(sys.argv[1], "grown KB", anon() - before)
