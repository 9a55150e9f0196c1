"""Anonymous memory around three snapshots of an 8-bit IVF read from DATA (made by
retrain_stacks.py: 300k faces, 8-bit codes from 200k), glibc's mmap threshold left
dynamic ("dynamic") or fixed at 4 MB with mallopt ("fixed"):
`python snapshot_heap.py DATA dynamic|fixed`. Output in NOTES.md."""
import sys, time, threading, ctypes
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
libc = ctypes.CDLL("libc.so.6")
if sys.argv[2] == "fixed":
    print("mallopt", libc.mallopt(-3, 4 * 2**20))   # M_MMAP_THRESHOLD = 4 MB (fixed: no dynamic raise)
from bench import scale
from facebank.index import factory
factory.COMPRESS_MIN = 200_000
def anon():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssAnon"].split()[0]) / 2**10
e = scale._engine(Path(sys.argv[1]) / "data")
seg = e.store.segments.get(e.store.collection("default").id, "enrolled")
print(seg.index.kind, len(seg.index))
from facebank.index.resident_pages import trim_heap
trim_heap(); base = anon(); peak = [base]; done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon()); time.sleep(0.01)
th = threading.Thread(target=sample); th.start()
for i in range(3):
    t = time.perf_counter()
    e.store.segments.snapshot(seg, e.store.uow.applying)
    print(f"snapshot {i}: {time.perf_counter() - t:.2f} s, peak +{peak[0] - base:.0f} MB, now +{anon() - base:.0f} MB", flush=True)
done.set(); th.join()
e.close()
