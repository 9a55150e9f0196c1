"""A face record's stored size and cost, JSON (before) against binary (index/face_record_codec.py).

Real faces: every photo of tests/data/faces through the default models, each face's
record built as the store builds it (`source_ref` the file name); synthetic: the
record the scale bench enrolls. Run from the project root:
    python bench/results/committed-2026-12-03-scale1m-face-record-cpu2/face_record_size.py
"""

import csv
import hashlib
import statistics
import timeit
from pathlib import Path

from facebank.embedder import OnnxFaceEmbedder, decode_image, default_model_spec
from facebank.index.face_record_codec import decode_face, encode_face
from facebank.index.records import FaceRecord, dumps, loads

FACES = Path("tests/data/faces")
embedder = OnnxFaceEmbedder(default_model_spec(), device="cpu")
real = []
with open(FACES / "labels.csv", newline="") as f:
    for row in csv.DictReader(f):
        data = (FACES / row["path"]).read_bytes()
        for face in embedder.analyze([decode_image(data)])[0]:
            real.append(FaceRecord(123456, 1, 45678, [float(x) for x in face.box], [[float(a), float(b)] for a, b in face.landmarks],
                                   float(face.detection_score), face.quality.to_dict(), hashlib.sha256(data).hexdigest(),
                                   Path(row["path"]).name, "scrfd500m-w600kmbf", 1796309762542, 45679))
synthetic = FaceRecord(1234567, 1, 123456, [0.0, 0.0, 1.0, 1.0], [[0.0, 0.0]] * 5, 0.9, {"passed": True}, "ab" * 32, "",
                       "scrfd500m-w600kmbf", 1796309832851, 123457)
for name, records in (("real", real), ("synthetic (the scale bench's)", [synthetic])):
    assert all(decode_face(encode_face(r)) == r for r in records)
    j = [len(dumps(r)) for r in records]
    b = [len(encode_face(r)) for r in records]
    r = records[0]
    as_json, as_binary = dumps(r), encode_face(r)
    n = 20_000
    times = {label: timeit.timeit(call, number=n) / n * 1e6 for label, call in (
        ("json write", lambda: dumps(r)), ("binary write", lambda: encode_face(r)),
        ("json read", lambda: loads(FaceRecord, as_json)), ("binary read", lambda: decode_face(as_binary)))}
    print(f"{name}: {len(records)} faces; bytes a record JSON mean {statistics.mean(j):.1f} (min {min(j)}, max {max(j)}), "
          f"binary mean {statistics.mean(b):.1f} (min {min(b)}, max {max(b)}); "
          + ", ".join(f"{k} {v:.1f} us" for k, v in times.items()))
