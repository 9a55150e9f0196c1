"""N faces loaded as a server loads them (the upkeep's rebuilds as they come due), 8-bit
codes from 200k (2M in a server): `python make_data.py DATA 300000`."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
from facebank.index import factory
factory.COMPRESS_MIN = 200_000
e = scale._engine(Path(sys.argv[1]) / "data")
scale.load_people(e, int(sys.argv[2]) // 10, upkeep=True)
e.maintenance.clean_now()
seg = e.store.segments.get(e.store.collection("default").id, "enrolled")
print(seg.index.kind, len(seg.index))
e.close()
