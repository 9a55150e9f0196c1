"""Decoding untrusted image bytes into upright 8-bit RGB arrays.

Everything a caller sends goes through `decode_image`: it accepts JPEG, PNG,
WebP and BMP (grayscale, palette, RGBA, 16-bit and CMYK included), applies the
EXIF orientation, and refuses what would hurt the server (decompression bombs,
absurd dimensions) or what it cannot use (animations, truncated files) with an
`InvalidArgument` that says what to send instead.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facebank.errors import InvalidArgument, Reason

# Decoders Pillow may use; anything else is refused before decoding. The JPEG
# decoder also opens MPO, the multi-picture JPEG many phone cameras write.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
FORMAT_NAMES = "JPEG, PNG, WebP or BMP"

# Never let Pillow silently decode a truncated file as a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.init()  # register every plugin, so that `formats=` can name WebP


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000  # e.g. 8660 x 5773; a 50 MP camera frame
    max_side: int = 16_384
    min_side: int = 16


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Return an upright H x W x 3 uint8 RGB array, or raise InvalidArgument."""
    if not data:
        raise InvalidArgument(
            f"the image is empty; send the bytes of a {FORMAT_NAMES} file",
            reason=Reason.EMPTY_IMAGE,
        )
    if len(data) > limits.max_bytes:
        raise InvalidArgument(
            f"the image is {len(data) / 2**20:.1f} MiB; the limit is "
            f"{limits.max_bytes / 2**20:.0f} MiB, so send a smaller file",
            reason=Reason.IMAGE_TOO_LARGE,
        )
    image = _open(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image) or image
    except Image.DecompressionBombError as err:
        raise _bomb(limits) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidArgument(
            f"the image is truncated or corrupt ({_short(err)}); send the complete file",
            reason=Reason.UNDECODABLE_IMAGE,
        ) from err
    return to_rgb8(image)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _bomb(limits) from err
    except UnidentifiedImageError as err:
        raise InvalidArgument(
            f"the data is not an image in a supported format; send a {FORMAT_NAMES} file",
            reason=Reason.UNDECODABLE_IMAGE,
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidArgument(
            f"the image header is corrupt ({_short(err)}); send a valid {FORMAT_NAMES} file",
            reason=Reason.UNDECODABLE_IMAGE,
        ) from err

    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise InvalidArgument(
            f"the image is {width} x {height} pixels; the limits are "
            f"{limits.max_pixels / 1e6:.0f} megapixels and {limits.max_side} pixels a side, "
            "so resize it first",
            reason=Reason.IMAGE_TOO_LARGE,
        )
    if min(width, height) < limits.min_side:
        raise InvalidArgument(
            f"the image is {width} x {height} pixels, too small to hold a face; "
            f"send at least {limits.min_side} pixels a side",
            reason=Reason.IMAGE_TOO_SMALL,
        )
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        raise InvalidArgument(
            f"the image is animated ({image.n_frames} frames); send a single still frame",
            reason=Reason.ANIMATED_IMAGE,
        )
    return image


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, 16-bit scaled down."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        gray = np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _bomb(limits: ImageLimits) -> InvalidArgument:
    return InvalidArgument(
        "the image declares more pixels than allowed (a decompression bomb?); the limit is "
        f"{limits.max_pixels / 1e6:.0f} megapixels, so resize it first",
        reason=Reason.IMAGE_TOO_LARGE,
    )


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


CROP_JPEG_QUALITY = 95  # a re-embedded crop keeps cosine >= 0.995 with its original (measured on tests/data/faces)


def encode_crop(crop: np.ndarray) -> bytes:
    """An aligned face crop (S x S x 3 uint8 RGB) as the JPEG that is kept, sealed, with the face."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop, dtype=np.uint8), "RGB").save(buffer, "JPEG", quality=CROP_JPEG_QUALITY)
    return buffer.getvalue()
