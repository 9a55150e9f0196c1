"""facebank.embedder: images and face models (detection, alignment, quality, embeddings)."""

from facebank.embedder.images import ImageLimits, decode_image, encode_crop
from facebank.embedder.models import ModelFile, ModelSpec, default_model_spec
from facebank.embedder.pipeline import FaceEmbedder, FaceObservation, OnnxFaceEmbedder
from facebank.embedder.quality import Quality, QualityAssessor, QualityPolicy

__all__ = [
    "FaceEmbedder",
    "FaceObservation",
    "ImageLimits",
    "ModelFile",
    "ModelSpec",
    "OnnxFaceEmbedder",
    "Quality",
    "QualityAssessor",
    "QualityPolicy",
    "decode_image",
    "encode_crop",
    "default_model_spec",
]
