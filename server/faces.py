"""From request bytes to observed faces: decode, bound the size, run the model.

Images are decoded and analysed a few at a time (so a request of many large
photos never holds them all decoded at once), and very large photos are
scaled down to WORK_SIDE before the model sees them; boxes and landmarks are
reported in the caller's original pixel coordinates.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import cv2
import numpy as np

from facebank.embedder import FaceEmbedder, FaceObservation, ImageLimits, decode_image, encode_crop
from facebank.embedder.quality import SMALL_BOUNDING_BOX
from facebank.errors import FacebankError, InvalidArgument
from facebank.index.sealed_faces import NewFace

WORK_SIDE = 4096
GROUP = 8


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FacePipeline:
    def __init__(self, embedder: FaceEmbedder, limits: ImageLimits = ImageLimits()) -> None:
        self.embedder = embedder
        self.limits = limits

    @property
    def model_id(self) -> str:
        return self.embedder.spec.model_id

    @property
    def dim(self) -> int:
        return self.embedder.spec.embedding_dim

    def analyze(self, images: list[bytes], max_faces: int = 0, *, label: str = "image", names: dict[int, str] | None = None) -> list[list[FaceObservation]]:
        """Faces of every image; an undecodable image fails the whole call, naming it
        (by `names[i]`, e.g. its file, else "image i+1")."""
        results = self.analyze_each(images, max_faces)
        for i, result in enumerate(results):
            if isinstance(result, FacebankError):
                raise result if len(images) == 1 else naming(result, (names or {}).get(i) or f"{label} {i + 1}")
        return results  # type: ignore[return-value]

    def analyze_each(self, images: list[bytes], max_faces: int = 0) -> list[list[FaceObservation] | FacebankError]:
        """Faces of every image, or the error that image alone met."""
        out: list[list[FaceObservation] | FacebankError] = []
        for start in range(0, len(images), GROUP):
            decoded, scales, slots = [], [], []
            for data in images[start : start + GROUP]:
                try:
                    array, scale = self._decode(data)
                except FacebankError as err:
                    out.append(err)
                    continue
                slots.append(len(out))
                out.append([])
                decoded.append(array)
                scales.append(scale)
            if decoded:
                for slot, faces, scale in zip(slots, self.embedder.analyze(decoded, max_faces), scales):
                    out[slot] = [self._rescale(f, scale) for f in faces] if scale != 1.0 else faces
        return out

    def _decode(self, data: bytes) -> tuple[np.ndarray, float]:
        array = decode_image(data, self.limits)
        side = max(array.shape[:2])
        if side <= WORK_SIDE:
            return array, 1.0
        scale = WORK_SIDE / side
        size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
        return cv2.resize(array, size, interpolation=cv2.INTER_AREA), scale

    def _rescale(self, face: FaceObservation, scale: float) -> FaceObservation:
        """Back to original pixels; the size check is judged on the original size."""
        inv = 1.0 / scale
        size = face.quality.face_size * inv
        reasons = face.quality.reasons
        minimum = self.embedder.quality_policy.min_face_size
        if SMALL_BOUNDING_BOX in reasons and size >= minimum:
            reasons = tuple(r for r in reasons if r != SMALL_BOUNDING_BOX)
        quality = replace(face.quality, face_size=size, reasons=reasons, passed=not reasons)
        return replace(face, box=face.box * inv, landmarks=face.landmarks * inv, quality=quality)

    def new_face(self, face: FaceObservation, image_sha256: str, source_ref: str) -> NewFace:
        return NewFace(
            box=face.box.tolist(), landmarks=face.landmarks.tolist(), detection_score=face.detection_score,
            quality=face.quality.to_dict(), embedding=face.embedding, image_sha256=image_sha256,
            source_ref=source_ref, model_id=self.model_id, crop=encode_crop(face.crop) if face.crop is not None else b"",
        )


def naming(err: FacebankError, where: str) -> FacebankError:
    """The same error, saying which of several images it is about."""
    return type(err)(f"{where}: {err.message}", reason=err.reason)


def require_face(faces: list[FaceObservation], *, accept_low_quality: bool, where: str = "the image") -> FaceObservation:
    """The largest face, if there is one and it passes the quality check."""
    from facebank.errors import Reason

    if not faces:
        raise InvalidArgument(f"no face was found in {where}; send a photo where the face is clearly visible", reason=Reason.NO_FACE)
    face = faces[0]
    if not face.quality.passed and not accept_low_quality:
        raise InvalidArgument(
            f"the face in {where} failed the quality check ({', '.join(face.quality.reasons)}); "
            "send a sharper, larger, more frontal photo, or accept low-quality faces (CLI: --accept-low-quality; API: quality_filter=NONE)",
            reason=Reason.LOW_QUALITY,
        )
    return face


