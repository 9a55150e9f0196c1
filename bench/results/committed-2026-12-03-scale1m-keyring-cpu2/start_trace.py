"""Python-side allocations alive after a start that rebuilt its indexes (tracemalloc; native ones,
FAISS's and OpenSSL's, are not seen). Run from the project root:
python bench/results/committed-2026-12-03-scale1m-keyring-cpu2/start_trace.py DATA_DIR (deletes its snapshots)."""
import sys, tracemalloc, gc
from pathlib import Path
sys.path.insert(0, ".")
tracemalloc.start(12)
from bench.scale import _engine
data = Path(sys.argv[1])
for s in (data / "indexes").glob("*.snap"):
    s.unlink()
engine = _engine(data)
engine.store.owners.loaded.wait(600)
gc.collect()
snap = tracemalloc.take_snapshot()
for stat in snap.statistics("traceback")[:6]:
    print(f"{stat.size / 2**20:.1f} MB in {stat.count} blocks")
    for line in stat.traceback.format()[-12:]:
        print("   ", line)
print("total traced", sum(s.size for s in snap.statistics("filename")) / 2**20, "MB")
engine.close()
