"""Anonymous memory of a start, settled (the owner map loaded, 3 s after), and after a malloc_trim:
from the snapshot, or rebuilding every index from the catalog (the snapshots deleted first).
Run from the project root: python bench/results/committed-2026-12-03-scale1m-keyring-cpu2/start_anon.py DATA_DIR snapshot|rebuild,
on a data directory built by bench/results/committed-2026-12-03-start1m-owner-map-ab-cpu2/build_data.py
(a copy of it: rebuild deletes its snapshots)."""
import sys, time
from pathlib import Path
sys.path.insert(0, ".")
from bench.scale import _engine
from facebank.index.resident_pages import trim_heap

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 2**20
data = Path(sys.argv[1])
if sys.argv[2] == "rebuild":
    for s in (data / "indexes").glob("*.snap"):
        s.unlink()
t = time.perf_counter()
engine = _engine(data)
engine.store.owners.loaded.wait(600)
time.sleep(3)
a = anon(); trim_heap(); time.sleep(1); b = anon()
print(f"{sys.argv[2]}: start {time.perf_counter() - t - 4:.1f} s, anon settled {a:.3f} GB, after malloc_trim {b:.3f} GB", flush=True)
engine.close()
