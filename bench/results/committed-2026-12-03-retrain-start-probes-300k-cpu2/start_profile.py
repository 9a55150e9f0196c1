"""Where a start from the snapshot spends its time: `python start_profile.py N` from the repository root."""
import sys, time, tempfile, shutil, cProfile, pstats
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from bench.scale import PER_ID, _engine, _search, load_people
n = int(sys.argv[1]); n_ids = n // PER_ID
tmp = Path(tempfile.mkdtemp())
engine = _engine(tmp / "data")
g = load_people(engine, n_ids)
q = g.faces(np.arange(64), np.random.default_rng(5)); del g
engine.maintenance.clean_now(); engine.close()
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
engine = _engine(tmp / "data"); found = _search(engine, q)
prof.disable()
print("start to first search", round(time.perf_counter() - t, 2), "right", np.mean([f == str(i) for i, f in enumerate(found)]), flush=True)
pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
engine.close(); shutil.rmtree(tmp)
