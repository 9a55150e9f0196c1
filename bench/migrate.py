"""Moving a collection to another model: `default` (512-d) -> `sface` (128-d).

A collection of N faces (synthetic identities of 10 faces, each face keeping a
real aligned crop, so the new model reads real faces) is migrated the way
`facebank migrate` does it; throughput in faces/s beside the same crops
embedded by the new model in a plain loop (the floor: what the model alone
costs), and the switch (indexes built beside, one unit of work) timed apart."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
SIZES: list[int] = []  # --migrate-sizes; default 100,000 (2,000 with --quick)


def _real_crops(n: int) -> list[bytes]:
    from facebank.embedder import OnnxFaceEmbedder, decode_image, default_model_spec, encode_crop

    embedder = OnnxFaceEmbedder(default_model_spec(), device="cpu")
    crops = []
    for path in sorted(PHOTOS.rglob("*.jpg")):
        for face in embedder.analyze([decode_image(path.read_bytes())])[0]:
            crops.append(encode_crop(face.crop))
        if len(crops) >= n:
            break
    embedder.close()
    return crops


def run(quick: bool, log=print) -> dict:
    rows = []
    for n in SIZES or ([2_000] if quick else [100_000]):
        rows.append(one_size(n, log))
    return {"migration": rows}


def one_size(n_faces: int, log) -> dict:
    from facebank.embedder.models import model_spec
    from facebank.index import identities, migration
    from facebank.index.sealed_faces import NewFace
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine
    from facebank.server.migrate import crop_embedder

    crops = _real_crops(32)
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(ServerConfig(data_dir=Path(tmp) / "data", listen="127.0.0.1:0", http="off"))
        try:
            dim, model_id = engine.parts.faces.dim, engine.parts.faces.model_id
            log(f"migration: loading {n_faces:,} faces with crops")
            for start in range(0, n_faces, 10_000):
                entries = []
                for i in range(start // 10, min(n_faces, start + 10_000) // 10):
                    v = rng.standard_normal((10, dim)).astype(np.float32)
                    v /= np.linalg.norm(v, axis=1, keepdims=True)
                    faces = [NewFace([0, 0, 90, 90], [[0, 0]] * 5, 0.9, {"passed": True}, v[j], f"{i * 10 + j:064x}", "", model_id,
                                     crops[(i * 10 + j) % len(crops)]) for j in range(10)]
                    entries.append((f"person-{i}", "", {}, faces))
                identities.enroll_many(engine.store, "default", entries)
            spec = model_spec("sface")
            pipeline = engine.parts.pipeline(spec)
            embed = crop_embedder(pipeline)
            sample = crops * (2_000 // len(crops) + 1)
            t0 = time.perf_counter()
            for s in range(0, 2_000, 64):
                embed(sample[s : s + 64])
            floor = 2_000 / (time.perf_counter() - t0)
            target = migration.Target("sface", spec.model_id, spec.embedding_dim, spec.default_threshold)
            t0 = time.perf_counter()
            switch_at = None
            for step in migration.migrate(engine.store, "default", target, embed):
                if step.stage == "switch":
                    switch_at = time.perf_counter()
            total = time.perf_counter() - t0
            switch_s = time.perf_counter() - switch_at if switch_at else 0.0
            assert engine.store.collection("default").model_id == spec.model_id
        finally:
            engine.close()
    row = {"faces": n_faces, "from": model_id, "to": spec.model_id, "total_s": round(total, 1),
           "faces_per_s": round(n_faces / total, 1), "model_alone_faces_per_s": round(floor, 1),
           "ratio_to_model_alone": round(n_faces / total / floor, 2), "switch_s": round(switch_s, 2)}
    log(f"migration: {row['faces_per_s']} faces/s ({row['ratio_to_model_alone']}x the model alone), switch {row['switch_s']} s")
    return row
