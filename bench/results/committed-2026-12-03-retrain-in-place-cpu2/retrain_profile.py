"""The retrain of retrain_peak.py (move mode) with its anonymous memory sampled every 10 ms and
the steps it passes through marked: `python retrain_profile.py DIR` (DIR made by `retrain_peak.py build`).
Prints the memory above the start whenever it moved by 50 MB, and each mark with the peak so far."""
import json, sys, threading, time, types
sys.path.insert(0, ".")  # run from the repository root
sys.path.insert(0, "bench/results/committed-2026-12-03-retrain-in-place-cpu2")
from pathlib import Path
import numpy as np, faiss
import retrain_peak as rp
from facebank.index import vectors, ivf_retrain, ivf_calibration, vector_source
from facebank.index.vectors import IvfIndex, TARGET_RECALL, tune_faiss
from facebank.index.segments import Segment
from facebank.index.records import IndexSettings
from facebank.index.resident_pages import trim_heap
marks = []
def wrap(owner, name, label=None, once=False):
    f = getattr(owner, name)
    raw = f.__func__ if isinstance(f, classmethod) else f
    seen = [0]
    def g(*a, **k):
        seen[0] += 1
        rec = not once or seen[0] == 1
        if rec: marks.append((time.monotonic(), "start " + (label or name)))
        try:
            return raw(*a, **k)
        finally:
            if rec: marks.append((time.monotonic(), "end " + (label or name)))
    return g
# class-level wrapping
def cwrap(cls, name, once=False):
    orig = cls.__dict__[name]
    if isinstance(orig, classmethod):
        fn = orig.__func__
        w = wrap(types.SimpleNamespace(x=fn), "x", name, once)
        setattr(cls, name, classmethod(w))
    elif isinstance(orig, staticmethod):
        fn = orig.__func__
        setattr(cls, name, staticmethod(wrap(types.SimpleNamespace(x=fn), "x", name, once)))
    else:
        setattr(cls, name, wrap(types.SimpleNamespace(x=orig), "x", name, once))
cwrap(IvfIndex, "trained_empty")
cwrap(vector_source.VectorSource, "take")
ivf_calibration_rel = ivf_calibration.relevant_in_sample
vectors.relevant_in_sample = wrap(types.SimpleNamespace(x=ivf_calibration_rel), "x", "relevant_in_sample")
cwrap(ivf_calibration.Calibration, "feed", once=True)
cwrap(ivf_calibration.Calibration, "finish")
ivf_retrain._move_all = wrap(ivf_retrain, "_move_all")
cwrap(ivf_retrain.MovingIvf, "move", once=True)
cwrap(IvfIndex, "expect_sizes")

orig_untrained = IvfIndex.__dict__["_untrained"].__func__
def untrained(*a, **k):
    idx = orig_untrained(*a, **k)
    t = idx.train
    def tr(x):
        marks.append((time.monotonic(), "start faiss train"))
        t(x)
        marks.append((time.monotonic(), "end faiss train"))
    idx.train = tr
    return idx
IvfIndex._untrained = staticmethod(untrained)

run = Path(sys.argv[1])
tune_faiss()
x = rp.faces(run)
info = json.loads((run / "built.json").read_text())
fi = faiss.read_index(str(run / "ivf_sq8_2m.index"))
fi.set_direct_map_type(faiss.DirectMap.Hashtable)
old = IvfIndex(rp.DIM, fi, np.arange(0, rp.N, 8, dtype=np.int64), trained_n=rp.N, nprobe=info["nprobe"], calibrated_recall=info["calibrated_recall"])
segment = Segment(1, "enrolled", rp.DIM, IndexSettings(kind="ivf"), old, retrain_pending=True)
source = rp.source_of(x)
trim_heap()
before = rp.anon_kb()
series, done = [], threading.Event()
def sample():
    while not done.is_set():
        series.append((time.monotonic(), rp.anon_kb()))
        time.sleep(0.01)
th = threading.Thread(target=sample); th.start()
fresh, calibration = IvfIndex.trained_empty(rp.DIM, source, like=old, family="ivf_sq8", seed=1)
del old
ivf_retrain.move_onto(segment, fresh, calibration, source.vectors_of, target_recall=TARGET_RECALL, keeps=True, stop=lambda: False, current=lambda: True)
done.set(); th.join()
t0 = series[0][0]
ev = sorted([(a, "M " + b) for a, b in marks] + [(a, v - before) for a, v in series], key=lambda e: e[0])
last, peak = None, 0
for a, e in ev:
    if isinstance(e, str):
        print(f"{a-t0:8.2f} {e}  (peak so far {peak//1024} MB)")
    else:
        peak = max(peak, e)
        if last is None or abs(e - last) > 50_000:
            print(f"{a-t0:8.2f} {e//1024} MB")
            last = e
print("BEFORE", before // 1024, "PEAK", peak // 1024)
