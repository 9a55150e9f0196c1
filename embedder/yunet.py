"""YuNet (OpenCV Zoo, MIT): a face detector with 5 landmarks, for the
commercially usable model pair (models.py `sface_model_spec`).

Its ONNX export takes one fixed 640 x 640 BGR image of 0-255 values; an image
is scaled so its longer side is 640 and padded (bottom and right) with black.
Each of three strides (8, 16, 32) gives, per grid cell, a class and an
objectness score (the face score is their geometric mean), a box as the
cell's offset and log size, and 5 landmarks as offsets: the decoding of
OpenCV's FaceDetectorYN, with boxes and landmarks scaled back to the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from facebank.embedder.detector import NMS_IOU, Detections
from facebank.embedder.runtime import InferenceModel

STRIDES = (8, 16, 32)
SIZE = 640


class YunetDetector:
    def __init__(self, model: InferenceModel, *, threshold: float = 0.7, size: int = SIZE) -> None:
        self.model = model
        self.threshold = threshold
        self.size = size
        self._cells = {s: _cells(size // s) for s in STRIDES}

    def detect(self, images: list[np.ndarray], max_faces: int = 0) -> list[Detections]:
        return [self._one(image, max_faces) for image in images]  # the export takes one image per call

    def _one(self, image: np.ndarray, max_faces: int) -> Detections:
        height, width = image.shape[:2]
        scale = min(self.size / height, self.size / width)
        new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]  # RGB -> BGR
        outputs = dict(zip(("cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32", "bbox_8", "bbox_16", "bbox_32",
                            "kps_8", "kps_16", "kps_32"), self.model.run(canvas.transpose(2, 0, 1)[None])))
        boxes, scores, marks = [], [], []
        for stride in STRIDES:
            cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
            score = np.sqrt(cls * obj)
            keep = score >= self.threshold
            if not keep.any():
                continue
            cells = self._cells[stride][keep]
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
            centre = (cells + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:]) * stride
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[keep]
            marks.append((kps + cells[:, None, :]) * stride)
            scores.append(score[keep])
        if not scores:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        box, score, mark = np.concatenate(boxes) / scale, np.concatenate(scores), np.concatenate(marks) / scale
        xywh = np.concatenate([box[:, :2], box[:, 2:] - box[:, :2]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), self.threshold, NMS_IOU), dtype=np.int64).reshape(-1)
        box, score, mark = box[keep], score[keep], mark[keep]
        order = np.argsort(-(box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), kind="stable")
        if max_faces:
            order = order[:max_faces]
        return Detections(box[order].astype(np.float32), score[order].astype(np.float32), mark[order].astype(np.float32))


def _cells(side: int) -> np.ndarray:
    ys, xs = np.mgrid[:side, :side]
    return np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)
