"""The face pipeline: detect, align, assess quality, embed.

`FaceEmbedder` is the interface the server depends on; `OnnxFaceEmbedder` runs
any ArcFace-style ONNX pair described by a `ModelSpec`. All faces of all images
of one call go through the recognizer together, in batches (one ONNX call per
batch, never one per face).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import numpy as np

from facebank.embedder.align import align_faces
from facebank.errors import FailedPrecondition
from facebank.embedder.batching import BatchingModel
from facebank.embedder.detector import ScrfdDetector
from facebank.embedder.models import ModelSpec
from facebank.embedder.quality import Quality, QualityAssessor, QualityPolicy
from facebank.embedder.runtime import InferenceModel, load_model, resolve_device


@dataclass(frozen=True)
class FaceObservation:
    """One face found in an image."""

    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels of the upright image
    landmarks: np.ndarray  # (5, 2)
    detection_score: float
    quality: Quality
    embedding: np.ndarray  # (d,) float32, L2-normalised
    crop: np.ndarray | None = None  # (S, S, 3) uint8 RGB: the aligned face the embedding was computed from

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


PAD = 0.5  # border added on every side, as a share of the image's longer side, when no face is found


def pad_image(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the image on a neutral grey border, where its top-left corner went)."""
    border = int(round(PAD * max(image.shape[:2])))
    padded = np.pad(image, ((border, border), (border, border), (0, 0)), constant_values=127)
    return padded, np.asarray([border, border], np.float32)


class FaceEmbedder(ABC):
    """Turns decoded images into observed faces with embeddings."""

    spec: ModelSpec
    device: str
    quality_policy: QualityPolicy

    @abstractmethod
    def analyze(self, images: list[np.ndarray], max_faces: int = 0) -> list[list[FaceObservation]]:
        """Every face of every image (largest first, at most max_faces if > 0)."""

    @abstractmethod
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (n x d, unit norm) of aligned crops (n x S x S x 3 uint8 RGB)."""

    def close(self) -> None:
        """Release background workers, if any."""


class OnnxFaceEmbedder(FaceEmbedder):
    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        quality: QualityAssessor | None = None,
        max_batch: int = 32,
        threads: int = 0,
        micro_batch_wait_ms: float = 0.0,
        backend: str = "auto",
        detector_model: InferenceModel | None = None,
        recognizer_model: InferenceModel | None = None,
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        detector = detector_model or load_model(spec.detector, self.device, threads=threads, backend=backend, fix_graph=spec.fix_batch)
        recognizer = recognizer_model or load_model(spec.recognizer, self.device, threads=threads, backend=backend, fix_batch=spec.fix_batch)
        if micro_batch_wait_ms > 0:
            # Concurrent requests share ONNX calls (worth it on a GPU).
            detector = BatchingModel(detector, max_batch=16, max_wait_ms=micro_batch_wait_ms)
            recognizer = BatchingModel(recognizer, max_batch=max_batch * 4, max_wait_ms=micro_batch_wait_ms)
        self.detector_model, self.recognizer_model = detector, recognizer
        if spec.detector_kind == "yunet":
            from facebank.embedder.yunet import YunetDetector

            self.detector = YunetDetector(detector, threshold=spec.detector_threshold)
        else:
            self.detector = ScrfdDetector(detector, size=spec.detector_size, threshold=spec.detector_threshold)
        self.quality = quality or QualityAssessor()
        self.quality_policy = self.quality.policy
        self.max_batch = max_batch
        scale = spec.crop_size / 112.0
        self._template = np.asarray(spec.template, dtype=np.float64) * scale
        self._check_dimension()

    def _check_dimension(self) -> None:
        probe = np.zeros((1, 3, self.spec.crop_size, self.spec.crop_size), np.float32)
        size = self.recognizer_model.run(probe)[0].size
        if size != self.spec.embedding_dim:
            raise FailedPrecondition(
                f"model {self.spec.model_id!r}: the recognizer outputs {size} values per face, "
                f"but the spec says embedding_dim={self.spec.embedding_dim}; fix the spec"
            )

    def analyze(self, images: list[np.ndarray], max_faces: int = 0) -> list[list[FaceObservation]]:
        detections = self.detector.detect(images, max_faces=max_faces)
        images, detections = self._retry_padded(images, detections, max_faces)
        crops = [align_faces(img, det.landmarks, self._template, self.spec.crop_size) for img, det in zip(images, detections)]
        counts = [len(c) for c in crops]
        embeddings = self.embed_crops(np.concatenate(crops)) if sum(counts) else np.zeros((0, self.spec.embedding_dim), np.float32)
        results: list[list[FaceObservation]] = []
        offset = 0
        for det, crop, count in zip(detections, crops, counts):
            faces = []
            shift = det.shift
            for j in range(count):
                box, landmarks = det.boxes[j], det.landmarks[j]
                if shift is not None:  # found in the padded image: back to the caller's pixels
                    box, landmarks = box - np.tile(shift, 2), landmarks - shift
                quality = self.quality.assess(box, float(det.scores[j]), landmarks, crop[j])
                faces.append(FaceObservation(box, landmarks, float(det.scores[j]), quality, embeddings[offset + j], crop[j]))
            offset += count
            results.append(faces)
        return results

    def _retry_padded(self, images: list[np.ndarray], detections: list, max_faces: int):
        """Images where no face was found are searched again with a border around
        them: a face that fills the frame (an ID-style crop) is too large for the
        detector's anchors. Faces found there are aligned on the padded image and
        reported in the original image's pixels (a box may reach past its edges)."""
        missing = [i for i, det in enumerate(detections) if len(det) == 0]
        if not missing:
            return images, detections
        padded = {i: pad_image(images[i]) for i in missing}
        retried = self.detector.detect([padded[i][0] for i in missing], max_faces=max_faces)
        images, detections = list(images), list(detections)
        for i, det in zip(missing, retried):
            if len(det):
                images[i], detections[i] = padded[i][0], replace(det, shift=padded[i][1])
        return images, detections

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        out = np.empty((len(crops), self.spec.embedding_dim), dtype=np.float32)
        for start in range(0, len(crops), self.max_batch):
            batch = crops[start : start + self.max_batch].astype(np.float32)
            batch -= self.spec.recognizer_mean
            batch /= self.spec.recognizer_std
            raw = self.recognizer_model.run(batch.transpose(0, 3, 1, 2))[0]
            out[start : start + len(batch)] = raw.reshape(len(batch), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def close(self) -> None:
        for model in (self.detector_model, self.recognizer_model):
            if isinstance(model, BatchingModel):
                model.close()
