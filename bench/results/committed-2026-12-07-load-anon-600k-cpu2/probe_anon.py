"""Where the loading process's extra anonymous memory is: a process that loaded N faces as the
scale bench's life loads them (the upkeep's rebuilds as they come due) against a start from
their snapshot, each measured after a heap trim: RssAnon, glibc's mallinfo2 (bytes in use,
free in the arenas), the IVF lists' room to grow, the owner map, Python objects by type.

    python probe_anon.py DIR load N      # GROWTH=16 in the environment: lists grow by a sixteenth
    python probe_anon.py DIR start N
"""
import ctypes, json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
from facebank.index.resident_pages import trim_heap

class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None); libc.mallinfo2.restype = MI

def objects():
    import gc, collections
    c = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return c.most_common(12)

def extras(engine):
    seg = engine.store.segments.get(engine.store.collection("default").id, "enrolled")
    out = {"index": seg.index.kind, "n": len(seg.index), "owner_map_mb": engine.store.owners._owner.nbytes >> 20}
    room = getattr(seg.index, "_room", None)
    if room is not None and room._room is not None:
        il = seg.index.index.invlists
        sizes = np.array([il.list_size(i) for i in range(seg.index.index.nlist)])
        out["room_mb"] = int((room._room - sizes).sum() * (il.code_size + 8)) >> 20
        out["codes_mb"] = int(sizes.sum() * (il.code_size + 8)) >> 20
    print(json.dumps(out), flush=True)
    print(objects(), flush=True)

def report(tag):
    trim_heap()
    m = libc.mallinfo2()
    st = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(("RssAnon", "RssFile"))}
    print(json.dumps({"tag": tag, "anon_mb": st["RssAnon"] // 1024, "file_mb": st["RssFile"] // 1024,
                      "heap_arena_mb": m.arena >> 20, "mmapped_mb": m.hblkhd >> 20, "in_use_mb": m.uordblks >> 20,
                      "free_mb": m.fordblks >> 20, "pymalloc_blocks": sys.getallocatedblocks()}), flush=True)

tmp, how, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import os
if os.environ.get("GROWTH"):
    from facebank.index import ivf_growth
    ivf_growth.GROWTH = int(os.environ["GROWTH"])
if how == "load":
    engine = scale._engine(tmp / "data")
    t0 = time.perf_counter()
    g = scale.load_people(engine, n // 10, upkeep=True)
    print(json.dumps({"load_faces_per_s": round(n / (time.perf_counter() - t0))}), flush=True)
    q = g.faces(np.arange(64), np.random.default_rng(1)); del g
    engine.maintenance.clean_now()
    scale._search(engine, q); time.sleep(3)
    report("loaded"); extras(engine)
    np.save(tmp / "q.npy", q)
    seg = engine.store.segments.get(engine.store.collection("default").id, "enrolled")
    print("index", seg.index.kind, len(seg.index))
    engine.close()
    report("closed")
else:
    q = np.load(tmp / "q.npy")
    engine = scale._engine(tmp / "data")
    scale._search(engine, q); time.sleep(3)
    engine.store.owners.loaded.wait(60)
    report("started"); extras(engine)
    engine.close()
    report("closed")
