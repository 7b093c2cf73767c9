"""Untrusted image files: a correct picture or a clear, per-file ImageDecodeError, nothing else."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from core.images import MAX_PIXELS, ImageDecodeError, decode_image, list_images


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _rgb(width=40, height=20):
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (200, 30, 30)
    array[:, width // 2:] = (30, 30, 200)
    return Image.fromarray(array)


def _bomb_png(width=60000, height=60000):
    """A valid, tiny PNG whose header declares width x height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD = {
    "zero bytes": (b"", "empty"),
    "random bytes": (os.urandom(2048), "not an image"),
    "text named png": (b"hello, I am not a picture\n" * 20, "not an image"),
    "truncated png": (_encode(_rgb(200, 100), "PNG")[:300], "corrupt or truncated"),
    "truncated jpeg": (_encode(_rgb(200, 100), "JPEG")[:400], "corrupt or truncated"),
    "decompression bomb": (_bomb_png(), "too large"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_raise_a_clear_error_naming_the_file(case):
    data, reason = BAD[case]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, "upload-7.png")
    assert str(info.value).startswith("upload-7.png: ")
    assert reason in str(info.value)


def test_paths_too(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.png: the file is empty"):
        decode_image(tmp_path / "empty.png")
    with pytest.raises(ImageDecodeError, match="missing.png: no such file"):
        decode_image(tmp_path / "missing.png")


def _assert_split_colours(image, size):
    assert image.mode == "RGB" and image.size == size
    left, right = image.getpixel((2, 2)), image.getpixel((size[0] - 3, 2))
    assert left[0] > left[2] and right[2] > right[0], (left, right)


GOOD = {
    "cmyk jpeg": lambda: _encode(_rgb().convert("CMYK"), "JPEG", quality=95),
    "palette png": lambda: _encode(_rgb().convert("P"), "PNG"),
    "rgba png": lambda: _encode(_rgb().convert("RGBA"), "PNG"),
    "bmp": lambda: _encode(_rgb(), "BMP"),
    "webp": lambda: _encode(_rgb(), "WEBP", lossless=True),
    "animated gif": lambda: _encode(_rgb().convert("P"), "GIF", save_all=True,
                                    append_images=[Image.new("P", (40, 20), 3)] * 2, duration=50),
    "animated webp": lambda: _encode(_rgb(), "WEBP", save_all=True, lossless=True,
                                     append_images=[Image.new("RGB", (40, 20), "green")], duration=50),
    "heic (iPhone photo)": lambda: _encode(_rgb(), "HEIF", quality=95),
    "avif": lambda: _encode(_rgb(), "AVIF", quality=95),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_unusual_but_valid_images_decode_to_rgb(case):
    _assert_split_colours(decode_image(GOOD[case](), case), (40, 20))


def test_transparent_areas_become_white():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert decode_image(_encode(image, "PNG"), "a.png").getpixel((5, 5)) == (255, 255, 255)
    palette = Image.new("P", (10, 10), 0)
    palette.info["transparency"] = 0
    assert decode_image(_encode(palette, "PNG", transparency=0), "p.png").getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_and_greyscale_keep_their_contrast():
    ramp = (np.tile(np.linspace(0, 65535, 64), (8, 1))).astype(np.uint16)
    image = decode_image(_encode(Image.fromarray(ramp), "PNG"), "deep.png")
    values = [image.getpixel((x, 4))[0] for x in (0, 32, 63)]
    assert values[0] < 10 and 100 < values[1] < 160 and values[2] > 245, "stretched, not clipped at 255"
    grey = decode_image(_encode(Image.new("L", (5, 5), 90), "PNG"), "g.png")
    assert grey.mode == "RGB" and grey.getpixel((1, 1)) == (90, 90, 90)
    la = decode_image(_encode(Image.new("LA", (5, 5), (90, 255)), "PNG"), "la.png")
    assert la.getpixel((1, 1)) == (90, 90, 90)


def test_exif_rotation_is_applied():
    image = _rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_encode(image, "JPEG", exif=exif.tobytes(), quality=95), "photo.jpg")
    assert decoded.size == (20, 40)


def test_a_phone_photo_in_heic_is_turned_upright_once():
    image = _rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(image, "HEIF", exif=exif.tobytes(), quality=95)
    assert data[4:12] == b"ftypheic", "an iPhone's container, not a JPEG renamed"
    decoded = decode_image(data, "IMG_0001.HEIC")
    assert decoded.size == (20, 40)
    top, bottom = decoded.getpixel((10, 2)), decoded.getpixel((10, 37))
    assert top[0] > top[2] and bottom[2] > bottom[0], "the red half (left) is on top after a clockwise turn"


def test_tiny_and_large_images():
    assert decode_image(_encode(Image.new("RGB", (1, 1), "white"), "PNG"), "dot.png").size == (1, 1)
    big = decode_image(_encode(Image.new("RGB", (5000, 5000), "white"), "PNG", compress_level=1), "big.png")
    assert big.size == (5000, 5000)
    side = int(MAX_PIXELS**0.5) + 10
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(_encode(Image.new("L", (side, side)), "PNG", compress_level=1), "huge.png")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_an_image_or_our_error(data):
    try:
        image = decode_image(data, "fuzz.bin")
    except ImageDecodeError as exc:
        assert str(exc).startswith("fuzz.bin: ")
    else:
        assert image.mode == "RGB" and image.size[0] >= 1 and image.size[1] >= 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=64))
def test_corrupted_real_files_give_an_image_or_our_error(cut, junk):
    """Real PNG/JPEG bytes with a chunk overwritten: the shapes decoders actually meet."""
    for original in (_encode(_rgb(64, 32), "PNG"), _encode(_rgb(64, 32), "JPEG")):
        at = cut % len(original)
        data = original[:at] + junk + original[at + len(junk):]
        try:
            image = decode_image(data, "mangled")
        except ImageDecodeError:
            continue
        assert image.mode == "RGB"


def test_list_images_sorts_numerically(tmp_path):
    for name in ("10.png", "2.png", "1.jpg", "notes.txt", "b.webp", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in list_images(tmp_path)] == ["1.jpg", "2.png", "10.png", "b.webp"]
