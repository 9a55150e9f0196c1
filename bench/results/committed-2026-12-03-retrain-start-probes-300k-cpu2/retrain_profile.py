"""Where a retrain's time goes: `python retrain_profile.py N` from the repository root."""
import sys, time, tempfile, shutil, functools
from pathlib import Path
sys.path.insert(0, ".")
from bench.scale import PER_ID, _engine, load_people
import facebank.index.vectors as V
import faiss
spent = {}
def timed(name, fn):
    @functools.wraps(fn)
    def inner(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] = spent.get(name, 0) + time.perf_counter() - t
    return inner
for name in ("relevant_in_sample", "fill_exactly", "calibrate_nprobe", "keep_coverage"):
    setattr(V, name, timed(name, getattr(V, name)))
V.VectorSource.take = timed("take(sample, queries)", V.VectorSource.take)
for cls in (faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer):
    cls.train = timed("kmeans (index.train)", cls.train)
n = int(sys.argv[1]); n_ids = n // PER_ID
tmp = Path(tempfile.mkdtemp())
engine = _engine(tmp / "data")
load_people(engine, n_ids)
t = time.perf_counter(); engine.maintenance.clean_now(); print("first build", round(time.perf_counter() - t, 1), {k: round(v, 1) for k, v in spent.items()}, flush=True)
spent.clear()
seg = engine.store.segments.all()[0]
print(seg.index.kind, seg.index.nlist, seg.index.default_nprobe, round(seg.index.calibrated_recall, 4), flush=True)
seg.retrain_pending = True; del seg
t = time.perf_counter(); engine.maintenance.clean_now(); print("retrain", round(time.perf_counter() - t, 1), {k: round(v, 1) for k, v in spent.items()}, flush=True)
seg = engine.store.segments.all()[0]
print(seg.index.kind, seg.index.nlist, seg.index.default_nprobe, round(seg.index.calibrated_recall, 4), flush=True)
engine.close(); shutil.rmtree(tmp)
