"""Embedding throughput: facebank's pipeline against the same two ONNX files
run with onnxruntime the usual way (a 640 x 640 detector canvas, one
recognizer call per face, default session options), on the real test photos."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"


class PlainSession:
    """onnxruntime with default options, as a script would use it."""

    device = "cpu"
    backend = "onnxruntime-plain"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def run(self, batch):
        return self.session.run(None, {self.name: np.ascontiguousarray(batch, np.float32)})


class SquareDetector:
    """SCRFD as it is usually run (insightface's way): every image on a
    640 x 640 canvas, normalised with cv2.dnn.blobFromImage; same decoding."""

    def __init__(self, session: PlainSession, spec) -> None:
        from facebank.embedder.detector import ScrfdDetector

        self.session = session
        self.size = spec.detector_size
        self.decoder = ScrfdDetector(session, size=spec.detector_size, threshold=spec.detector_threshold)

    def detect(self, images):
        import cv2

        out = []
        for image in images:
            h, w = image.shape[:2]
            scale = min(self.size / h, self.size / w)
            resized = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))
            canvas = np.zeros((self.size, self.size, 3), np.uint8)
            canvas[: resized.shape[0], : resized.shape[1]] = resized
            blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128, (self.size, self.size), (127.5, 127.5, 127.5))
            outputs = self.session.run(blob)
            out.append(self.decoder._decode([o[0] for o in outputs], scale, self.size, self.size, 0))
        return out


def naive_analyze(images, detector, recognizer, spec) -> list[int]:
    """Detect per image, then embed face by face."""
    from facebank.embedder.align import align_faces

    template = np.asarray(spec.template, np.float64)
    counts = []
    for image in images:
        det = detector.detect([image])[0]
        for landmarks in det.landmarks:
            crop = align_faces(image, landmarks[None], template, spec.crop_size)[0]
            blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
            vector = recognizer.run(blob)[0][0]
            vector /= np.linalg.norm(vector)
        counts.append(len(det))
    return counts


def run(quick: bool, log=print) -> dict:
    from facebank.embedder import OnnxFaceEmbedder, decode_image, default_model_spec

    spec = default_model_spec()
    files = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    images = [decode_image(p.read_bytes()) for p in files]
    passes = 3 if quick else 15
    facebank = OnnxFaceEmbedder(spec, device="cpu")
    plain_detector = SquareDetector(PlainSession(spec.detector.path), spec)
    plain_recognizer = PlainSession(spec.recognizer.path)
    faces_per_pass = sum(len(f) for f in facebank.analyze(images))

    systems = [
        ("naive per-face loop", 1, lambda batch: naive_analyze(batch, plain_detector, plain_recognizer, spec)),
        ("facebank", 1, facebank.analyze),
        ("facebank", 8, facebank.analyze),
    ]
    for _, per_call, call in systems:
        call(images[:per_call])  # warm up
    # Interleaved passes (each system once per pass, in turn), medians reported:
    # a shared machine drifts, and this keeps the drift out of the ratios.
    pass_times = {i: [] for i in range(len(systems))}
    latencies = {i: [] for i in range(len(systems))}
    for _ in range(passes):
        for i, (_, per_call, call) in enumerate(systems):
            started = time.perf_counter()
            for j in range(0, len(images), per_call):
                t0 = time.perf_counter()
                call(images[j : j + per_call])
                latencies[i].append((time.perf_counter() - t0) / len(images[j : j + per_call]))
            pass_times[i].append(time.perf_counter() - started)
    rows = []
    for i, (name, per_call, _) in enumerate(systems):
        median = float(np.median(pass_times[i]))
        rows.append({"system": name, "images_per_call": per_call, "faces_per_s": round(faces_per_pass / median, 1),
                     "images_per_s": round(len(images) / median, 1), "p50_ms_per_image": round(float(np.median(latencies[i])) * 1000, 1)})
        log(f"embedding: {name} ({per_call}/call): {rows[-1]['faces_per_s']} faces/s")
    naive = rows[0]["faces_per_s"]
    return {"embedding": rows, "embedding_summary": {"photos": len(images), "faces": faces_per_pass,
            "speedup_vs_naive": {f"facebank x{r['images_per_call']}": round(r["faces_per_s"] / naive, 2) for r in rows[1:]}}}
