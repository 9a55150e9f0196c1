"""A collection's life as `bench/scale.py` runs it, up to the retrain: is the replaced index freed,
and does its memory leave the process? `python <this file> N [--force-retrain]` from the repository
root (N faces; --force-retrain marks the index for a retrain instead of waiting for the forgets to)."""
import sys, threading, tempfile, weakref, gc
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from bench.scale import FORGETS, PER_ID, _engine, _search, load_people
from facebank.v1 import facebank_pb2 as pb
n = int(sys.argv[1]); n_ids = n // PER_ID
tmp = Path(tempfile.mkdtemp())
engine = _engine(tmp / "data")
g = load_people(engine, n_ids)
queries = g.faces(np.random.default_rng(15).integers(0, n_ids, 64), np.random.default_rng(16))
del g
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"): return int(line.split()[1]) / 1e6
engine.maintenance.clean_now()
print("built", anon(), flush=True)
stop = threading.Event()
def loop():
    while not stop.is_set(): _search(engine, queries)
th = threading.Thread(target=loop, daemon=True); th.start()
for i in range(FORGETS):
    engine.identities.forget(pb.ForgetRequest(collection="default", identity_id=str(i)))
seg = engine.store.segments.all()[0]
if "--force-retrain" in sys.argv:
    seg.retrain_pending = True
print("pending", seg.retrain_pending, seg.index.kind, anon(), flush=True)
old = weakref.ref(seg.index); oldseg = weakref.ref(seg); del seg
engine.maintenance.clean_now()
stop.set(); th.join()
print("after retrain anon", anon(), "old index alive", old() is not None, "old segment alive", oldseg() is not None, flush=True)
gc.collect(); print("after gc", anon(), old() is not None, flush=True)
from facebank.index.resident_pages import trim_heap
print("trim", trim_heap(), "after trim", anon(), flush=True)
for name, ref in (("index", old), ("segment", oldseg)):
    o = ref()
    if o is None: continue
    for r in gc.get_referrers(o):
        if r is globals(): continue
        print(name, "<-", type(r), (list(r.keys())[:15] if isinstance(r, dict) else str(r)[:300]), flush=True)
        for rr in gc.get_referrers(r)[:6]:
            print("     <-", type(rr), (list(rr.keys())[:15] if isinstance(rr, dict) else str(rr)[:300]), flush=True)
    del o
engine.close()
import shutil; shutil.rmtree(tmp)
