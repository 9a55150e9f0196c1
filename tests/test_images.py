"""Image decoding: every accepted form handled right, every bad one refused
with INVALID_ARGUMENT and a message, never anything else (fuzzed)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import SOAK, single_person_photos
from facebank.embedder import ImageLimits, decode_image
from facebank.errors import InvalidArgument, Reason

FACE = single_person_photos()["obama"][0]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def face_image() -> Image.Image:
    return Image.open(FACE.path).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_formats_decode_to_rgb(face_image, fmt):
    array = decode_image(encode(face_image, fmt))
    assert array.dtype == np.uint8 and array.shape == (face_image.height, face_image.width, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_modes_become_rgb(face_image, mode):
    if mode == "I;16":
        gray = np.asarray(face_image.convert("L"), np.uint16) * 257
        image = Image.fromarray(gray)  # uint16 -> mode I;16
        data = encode(image, "PNG")
    else:
        data = encode(face_image.convert(mode), "JPEG" if mode == "CMYK" else "PNG")
    array = decode_image(data)
    assert array.shape == (face_image.height, face_image.width, 3)
    reference = np.asarray(face_image.convert("L"), np.float32)
    assert np.corrcoef(array.mean(axis=2).ravel(), reference.ravel())[0, 1] > 0.9


def test_16_bit_rgb_png_keeps_its_range(face_image):
    rgb16 = np.asarray(face_image, np.uint16) * 257
    # Pillow writes 16-bit RGB PNG from mode "RGB;16"-like arrays only via raw PNG; build one by hand.
    height, width = rgb16.shape[:2]
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(height))
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    array = decode_image(png)
    assert abs(float(array.mean()) - float(np.asarray(face_image).mean())) < 2.0


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_alpha_is_composited_over_white():
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    array = decode_image(encode(rgba, "PNG"))
    assert (array == 255).all()


def test_exif_rotated_photo_is_turned_upright(face_image, embedder):
    rotated = face_image.rotate(90, expand=True)  # pixels lie on their side...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and the camera says: rotate 90 degrees clockwise to view
    data = encode(rotated, "JPEG", exif=exif.tobytes())
    array = decode_image(data)
    assert array.shape[:2] == (face_image.height, face_image.width)
    faces = embedder.analyze([array])[0]
    assert len(faces) == 1 and abs(faces[0].quality.roll) < 20


def test_rgba_edge_case_photo_has_its_face(embedder):
    from conftest import FACES

    array = decode_image((FACES / "edge_cases" / "rgba_32bit.png").read_bytes())
    assert len(embedder.analyze([array])[0]) == 1


@pytest.mark.parametrize(
    "data, reason, fragment",
    [
        (b"", Reason.EMPTY_IMAGE, "empty"),
        (b"GIF89a not really", Reason.UNDECODABLE_IMAGE, "supported format"),
        (b"%PDF-1.4 hello", Reason.UNDECODABLE_IMAGE, "supported format"),
        (bytes(range(256)) * 40, Reason.UNDECODABLE_IMAGE, "supported format"),
    ],
)
def test_non_images_are_refused(data, reason, fragment):
    with pytest.raises(InvalidArgument, match=fragment) as err:
        decode_image(data)
    assert err.value.reason == reason


def test_truncated_jpeg_is_refused(face_image):
    data = encode(face_image, "JPEG")
    with pytest.raises(InvalidArgument, match="truncated or corrupt") as err:
        decode_image(data[: len(data) // 2])
    assert err.value.reason == Reason.UNDECODABLE_IMAGE


def test_decompression_bomb_is_refused_before_decoding():
    # A valid PNG header declaring 100,000 x 100,000 pixels, in a few hundred bytes.
    width = height = 100_000
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b"")
    assert len(png) < 1000
    with pytest.raises(InvalidArgument, match="megapixels") as err:
        decode_image(png)
    assert err.value.reason == Reason.IMAGE_TOO_LARGE


@pytest.mark.parametrize("size", [(20_000, 20), (8, 8)])
def test_absurd_dimensions_are_refused(size):
    data = encode(Image.new("L", size), "PNG")
    with pytest.raises(InvalidArgument) as err:
        decode_image(data)
    assert err.value.reason in (Reason.IMAGE_TOO_LARGE, Reason.IMAGE_TOO_SMALL)


def test_oversized_file_is_refused():
    with pytest.raises(InvalidArgument, match="MiB"):
        decode_image(b"\xff\xd8" + b"\x00" * 2048, ImageLimits(max_bytes=1024))


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animations_are_refused(fmt):
    frames = [Image.new("RGB", (64, 64), (i * 40, 0, 0)) for i in range(3)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(InvalidArgument, match="animated") as err:
        decode_image(data)
    assert err.value.reason == Reason.ANIMATED_IMAGE


def test_gif_and_tiff_are_not_accepted(face_image):
    for fmt in ("GIF", "TIFF"):
        with pytest.raises(InvalidArgument, match="JPEG, PNG, WebP or BMP"):
            decode_image(encode(face_image, fmt))


@settings(max_examples=300 * SOAK, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes_never_escape_as_other_errors(data):
    try:
        decode_image(data)
    except InvalidArgument:
        pass


@settings(max_examples=150 * SOAK, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_images(data):
    """Real JPEG/PNG files with bytes flipped, cut or inserted: decoded or refused, nothing else."""
    fmt = data.draw(st.sampled_from(["JPEG", "PNG", "WEBP"]))
    base = bytearray(_SMALL[fmt])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            base[pos] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del base[pos:pos + data.draw(st.integers(1, 64))]
        else:
            base[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        if not base:
            break
    try:
        array = decode_image(bytes(base))
        assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    except InvalidArgument:
        pass


_SMALL = {fmt: encode(Image.open(FACE.path).convert("RGB").resize((96, 96)), fmt) for fmt in ("JPEG", "PNG", "WEBP")}
