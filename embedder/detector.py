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
    shift: np.ndarray | None = None  # set when found in a padded copy: where the original's corner went

    def __len__(self) -> int:
        return len(self.scores)


class ScrfdDetector:
    """Images are scaled so that their longer side is `size` pixels and padded
    only up to the next multiple of size/4 rather than to a full square: a 4:3
    photo costs 640 x 480, not 640 x 640. The canvas depends on the image alone,
    so an image gives the same faces whatever else shares its batch."""

    def __init__(self, model: InferenceModel, *, size: int = 640, threshold: float = 0.4, max_batch: int = 8) -> None:
        self.model = model
        self.size = size
        self.threshold = threshold
        self.max_batch = max_batch
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def detect(self, images: list[np.ndarray], max_faces: int = 0) -> list[Detections]:
        """Images of the same canvas shape share one model call (at most max_batch)."""
        blobs = [self._letterbox(img) for img in images]
        results: list[Detections | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, (blob, _) in enumerate(blobs):
            by_shape.setdefault(blob.shape, []).append(i)
        for (_, height, width), members in by_shape.items():
            for start in range(0, len(members), self.max_batch):
                group = members[start : start + self.max_batch]
                outputs = self.model.run(np.stack([blobs[i][0] for i in group]))
                for row, i in enumerate(group):
                    results[i] = self._decode([o[row] for o in outputs], blobs[i][1], height, width, max_faces)
        return results  # type: ignore[return-value]

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Scale the longer side to `size`, pad to a multiple of size/4, normalise: (3, H, W) float32.
        Written channel by channel into the planar buffer (transposing a whole
        interleaved canvas costs ten times more)."""
        height, width = image.shape[:2]
        scale = min(self.size / height, self.size / width)
        new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        step = self.size // _BUCKETS
        blob = np.full((3, -(-new_h // step) * step, -(-new_w // step) * step), _PAD, dtype=np.float32)
        for channel, plane in enumerate(cv2.split(resized)):
            region = blob[channel, :new_h, :new_w]
            region[...] = plane
            region -= 127.5
            region *= 1.0 / 128.0
        return blob, scale

    def _decode(self, outputs: list[np.ndarray], scale: float, height: int, width: int, max_faces: int) -> Detections:
        boxes, scores, marks = [], [], []
        n = len(STRIDES)
        for i, stride in enumerate(STRIDES):
            score = outputs[i].reshape(-1)
            keep = score >= self.threshold
            if not keep.any():
                continue
            centers = self._anchors(height, width, stride)[keep]
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

    def _anchors(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._centers:
            self._centers[key] = _anchor_centers(height // stride, width // stride, stride)
        return self._centers[key]


_PAD = -127.5 / 128.0  # a black pixel, normalised
_BUCKETS = 4           # canvas sides are multiples of size / 4: a few shapes, so batches form


def _anchor_centers(height: int, width: int, stride: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, ANCHORS_PER_CELL, axis=0)
