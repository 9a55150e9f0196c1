"""Face quality: size, detector confidence, sharpness and head pose.

Reasons follow Rekognition's vocabulary so that applications can act on them.
Pose is estimated from the 5 landmarks alone (no 3D model): yaw from where the
nose tip falls between the eyes, pitch from where it falls between the eye line
and the mouth line, roll from the eye line's angle. The estimates are coarse
(about +-10 degrees) but tell a frontal face from a profile reliably.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

SMALL_BOUNDING_BOX = "SMALL_BOUNDING_BOX"
LOW_CONFIDENCE = "LOW_CONFIDENCE"
LOW_SHARPNESS = "LOW_SHARPNESS"
EXTREME_POSE = "EXTREME_POSE"

# Nose-to-eye-line over mouth-to-eye-line on the frontal ArcFace template.
_FRONTAL_PITCH_RATIO = (71.7366 - 51.6) / (92.28 - 51.6)
# Nose tip depth relative to half the distance between the eyes (anthropometric).
_NOSE_DEPTH = 1.0


@dataclass(frozen=True)
class QualityPolicy:
    min_face_size: float = 40.0    # pixels, shorter side of the box
    min_detection_score: float = 0.5
    min_sharpness: float = 12.0    # variance of the Laplacian on the 112 x 112 crop
    max_yaw: float = 50.0          # degrees
    max_pitch: float = 40.0


@dataclass(frozen=True)
class Quality:
    passed: bool
    reasons: tuple[str, ...]
    face_size: float
    detection_score: float
    sharpness: float
    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "face_size": round(self.face_size, 1),
            "detection_score": round(self.detection_score, 4),
            "sharpness": round(self.sharpness, 2),
            "yaw": round(self.yaw, 1),
            "pitch": round(self.pitch, 1),
            "roll": round(self.roll, 1),
        }

    @classmethod
    def from_dict(cls, raw: dict) -> "Quality":
        return cls(
            passed=bool(raw["passed"]),
            reasons=tuple(raw.get("reasons", ())),
            **{k: float(raw[k]) for k in ("face_size", "detection_score", "sharpness", "yaw", "pitch", "roll")},
        )


@dataclass(frozen=True)
class QualityAssessor:
    policy: QualityPolicy = field(default_factory=QualityPolicy)

    def assess(self, box: np.ndarray, score: float, landmarks: np.ndarray, crop: np.ndarray) -> Quality:
        size = float(min(box[2] - box[0], box[3] - box[1]))
        sharp = sharpness(crop)
        yaw, pitch, roll = head_pose(landmarks)
        p = self.policy
        reasons = []
        if size < p.min_face_size:
            reasons.append(SMALL_BOUNDING_BOX)
        if score < p.min_detection_score:
            reasons.append(LOW_CONFIDENCE)
        if sharp < p.min_sharpness:
            reasons.append(LOW_SHARPNESS)
        if abs(yaw) > p.max_yaw or abs(pitch) > p.max_pitch:
            reasons.append(EXTREME_POSE)
        return Quality(not reasons, tuple(reasons), size, float(score), sharp, yaw, pitch, roll)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (higher is sharper)."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 landmarks; positive yaw = face turned to its left."""
    pts = np.asarray(landmarks, dtype=np.float64)
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    dx, dy = right_eye - left_eye
    roll = math.degrees(math.atan2(dy, dx))
    # Rotate so that the eye line is horizontal, centred on the eyes' midpoint.
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    eye_mid = (left_eye + right_eye) / 2
    local = (pts - eye_mid) @ rot.T
    half_eyes = max(abs(local[1, 0] - local[0, 0]) / 2, 1e-6)
    yaw = math.degrees(math.atan2(local[2, 0] / half_eyes, _NOSE_DEPTH))
    mouth_y = (local[3, 1] + local[4, 1]) / 2
    if mouth_y <= 1e-6:
        pitch = 90.0
    else:
        ratio = local[2, 1] / mouth_y
        pitch = math.degrees(math.atan2((ratio - _FRONTAL_PITCH_RATIO) * 2.0, 1.0))
    return yaw, pitch, roll
