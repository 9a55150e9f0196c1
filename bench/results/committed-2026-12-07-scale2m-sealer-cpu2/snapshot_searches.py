"""Anonymous memory around three snapshots of a 300k-face 8-bit IVF while SEARCHERS threads
(default 4) run batch-64 searches on it, with the snapshot code of a given commit or of the
working tree: `python snapshot_searches.py DATA REV|current [fixed]` (REV: e.g. d6796c2, the
sealer that made new chunk buffers; `fixed`: glibc's mmap threshold fixed at 4 MB).
DATA: `python make_data.py DATA 300000`. Output in NOTES.md."""
import ctypes, importlib.util, os, subprocess, sys, tempfile, threading, time
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
if "fixed" in sys.argv[3:]:
    ctypes.CDLL("libc.so.6").mallopt(-3, 4 * 2**20)   # M_MMAP_THRESHOLD
if sys.argv[2] != "current":   # that commit's snapshot module in place of the working tree's
    old = Path(tempfile.mkdtemp()) / "snapshot.py"
    old.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{sys.argv[2]}:index/snapshot.py"],
                                   check=True, capture_output=True).stdout)
    spec = importlib.util.spec_from_file_location("facebank.index.snapshot", old)
    module = importlib.util.module_from_spec(spec)
    sys.modules["facebank.index.snapshot"] = module
    spec.loader.exec_module(module)
from bench import scale
from facebank.index import factory
from facebank.index.resident_pages import trim_heap
factory.COMPRESS_MIN = 200_000
def anon():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssAnon"].split()[0]) / 2**10
e = scale._engine(Path(sys.argv[1]) / "data")
seg = e.store.segments.get(e.store.collection("default").id, "enrolled")
print(sys.argv[2:], seg.index.kind, len(seg.index))
trim_heap(); base = anon(); peak = [base]; done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon()); time.sleep(0.01)
def searches():
    r = np.random.default_rng(2)
    while not done.is_set():
        q = r.standard_normal((64, 512)).astype(np.float32)
        seg.search(q / np.linalg.norm(q, axis=1, keepdims=True), 10)
threads = [threading.Thread(target=sample)] + [threading.Thread(target=searches) for _ in range(int(os.environ.get("SEARCHERS", "4")))]
[t.start() for t in threads]
for i in range(3):
    t = time.perf_counter()
    e.store.segments.snapshot(seg, e.store.uow.applying)
    print(f"snapshot {i}: {time.perf_counter() - t:.2f} s, peak +{peak[0] - base:.0f} MB, now +{anon() - base:.0f} MB", flush=True)
done.set(); [t.join() for t in threads]
e.close()
