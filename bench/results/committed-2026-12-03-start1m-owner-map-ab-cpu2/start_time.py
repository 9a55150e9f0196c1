"""Seconds from the start to the first correct search on a data directory (and, where the map loads after, to its end)."""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from bench.scale import _engine, _search
data = Path(sys.argv[1])
probes, ids = np.load(data.parent / "probes.npy"), np.load(data.parent / "probe_ids.npy")
t = time.perf_counter()
engine = _engine(data)
found = _search(engine, probes)
first = time.perf_counter() - t
right = float(np.mean([f == str(i) for f, i in zip(found, ids)]))
owners = engine.store.owners
loaded = owners.loaded.wait(600) if hasattr(owners, "loaded") else True
print(f"first_search_s={first:.2f} right={right:.3f} owner_map_done_s={time.perf_counter() - t:.2f}", flush=True)
engine.close()
