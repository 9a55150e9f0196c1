"""Does a load leave memory behind that a fresh start does not hold? `python load_probe.py DATA
400000 upkeep|after` loads (with the upkeep's rebuilds, or into the exact index built once at the
end) and prints anonymous/file GB after the load, after clean_now and after a malloc_trim;
`python load_probe.py DATA 400000 start` starts on DATA and prints the same."""
import ctypes, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale

def anon():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssAnon"].split()[0]) / 2**20, int(f["RssFile"].split()[0]) / 2**20

def main(tmp, n, mode):
    tmp = Path(tmp)
    if mode in ("upkeep", "after"):
        e = scale._engine(tmp / "data")
        t = time.time()
        scale.load_people(e, int(n) // 10, upkeep=mode == "upkeep")
        print("loaded", round(time.time() - t), "s", anon(), flush=True)
        e.maintenance.clean_now()
        time.sleep(3)
        print("after clean_now", anon(), flush=True)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        print("after malloc_trim", anon(), flush=True)
        segs = e.store.segments
        for p in segs.places():
            s = segs.find(*p)
            if s is not None:
                print(p, type(s.index).__name__, len(s.index), getattr(s.index, "nlist", None), flush=True)
        e.close()
    else:
        e = scale._engine(tmp / "data")
        scale._search(e, __import__("numpy").random.default_rng(0).standard_normal((64, 512)).astype("float32"))
        time.sleep(3)
        print("fresh start", anon(), flush=True)
        e.close()

main(*sys.argv[1:])
