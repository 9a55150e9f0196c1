"""SCRFD face detection with 5 landmarks, batched over images.

Each image is scaled to fit a square canvas (640 px by default) and padded at
the right and bottom, so several images share one ONNX call. Output decoding
follows the SCRFD paper's anchor-free heads: three strides (8, 16, 32), two
anchors per location, box and landmark offsets in units of the stride.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facebank.embedder.runtime import InferenceModel

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
NMS_IOU = 0.4


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in original pixel coordinates, largest first."""

    boxes: np.ndarray      # (n, 4) x0, y0, x1, y1
    scores: np.ndarray     # (n,)
    landmarks: np.ndarray  # (n, 5, 2)

    def __len__(self) -> int:
        return len(self.scores)


class ScrfdDetector:
    def __init__(self, model: InferenceModel, *, size: int = 640, threshold: float = 0.4, max_batch: int = 8) -> None:
        self.model = model
        self.size = size
        self.threshold = threshold
        self.max_batch = max_batch
        self._centers = {s: _anchor_centers(size // s, size // s, s) for s in STRIDES}

    def detect(self, images: list[np.ndarray], max_faces: int = 0) -> list[Detections]:
        results: list[Detections] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            canvases, scales = zip(*(self._letterbox(img) for img in chunk))
            outputs = self.model.run(np.stack(canvases))
            for i, scale in enumerate(scales):
                results.append(self._decode([o[i] for o in outputs], scale, max_faces))
        return results

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = image.shape[:2]
        scale = min(self.size / height, self.size / width)
        new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        canvas = np.zeros((self.size, self.size, 3), dtype=np.float32)
        canvas[:new_h, :new_w] = resized
        canvas -= 127.5
        canvas /= 128.0
        return canvas.transpose(2, 0, 1), scale

    def _decode(self, outputs: list[np.ndarray], scale: float, max_faces: int) -> Detections:
        boxes, scores, marks = [], [], []
        n = len(STRIDES)
        for i, stride in enumerate(STRIDES):
            score = outputs[i].reshape(-1)
            keep = score >= self.threshold
            if not keep.any():
                continue
            centers = self._centers[stride][keep]
            dist = outputs[i + n].reshape(-1, 4)[keep] * stride
            kps = outputs[i + 2 * n].reshape(-1, 10)[keep] * stride
            boxes.append(np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1))
            marks.append(centers[:, None, :] + kps.reshape(-1, 5, 2))
            scores.append(score[keep])
        if not scores:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        box = np.concatenate(boxes) / scale
        score = np.concatenate(scores)
        mark = np.concatenate(marks) / scale
        xywh = np.concatenate([box[:, :2], box[:, 2:] - box[:, :2]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), self.threshold, NMS_IOU), dtype=np.int64).reshape(-1)
        box, score, mark = box[keep], score[keep], mark[keep]
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        order = np.argsort(-area, kind="stable")
        if max_faces:
            order = order[:max_faces]
        return Detections(box[order].astype(np.float32), score[order].astype(np.float32), mark[order].astype(np.float32))


def _anchor_centers(height: int, width: int, stride: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, ANCHORS_PER_CELL, axis=0)
