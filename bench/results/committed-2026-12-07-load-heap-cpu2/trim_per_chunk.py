"""Anonymous memory a load leaves free in the heap, chunk by chunk: N synthetic faces loaded
as a server loads them (the upkeep's rebuilds as they come due), a malloc_trim after each
chunk of 10,000 faces timed and its return printed: `python trim_per_chunk.py DATA 400000`."""
import ctypes, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
from bench.search import enroll_synthetic
from bench.synthetic import gallery
libc = ctypes.CDLL("libc.so.6")
def anon():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssAnon"].split()[0]) / 2**10
tmp, n = Path(sys.argv[1]), int(sys.argv[2])
e = scale._engine(tmp / "data")
g = gallery(n // 10, seed=11)
for start in range(0, n // 10, 1000):
    labels = np.repeat(np.arange(start, min(n // 10, start + 1000)), 10)
    a0 = anon()
    enroll_synthetic(e, "default", g.faces(labels, np.random.default_rng(12 + start)), 10, chunk=1000, first_id=start)
    a1 = anon()
    due = scale._rebuild_due(e)
    if due:
        e.maintenance.clean_now()
    a2 = anon()
    t = time.perf_counter(); libc.malloc_trim(0); tt = time.perf_counter() - t
    a3 = anon()
    if start % 5000 == 0 or due:
        print(f"{(start+1000)*10:>8} enroll +{a1-a0:6.0f} MB rebuild({due}) {a2-a1:+6.0f} trim freed {a2-a3:6.0f} MB in {tt*1000:.0f} ms -> {a3:.0f}", flush=True)
e.close()
