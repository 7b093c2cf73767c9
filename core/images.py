"""Decoding untrusted image files into RGB pictures, or a clear per-file error.

Used by ``core.predict`` and the app's upload page: anything a user hands us goes
through :func:`decode_image`, which only ever returns an RGB ``PIL.Image`` or raises
:class:`ImageDecodeError` naming the file and the problem.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF, what an iPhone saves its photos as; Pillow itself reads AVIF
    from pillow_heif import register_heif_opener
except ImportError:  # requirements.txt installs it; without it a HEIC file gets the "not an image" error
    pass
else:
    register_heif_opener()

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif")
READABLE_FORMATS = "PNG, JPEG, BMP, WebP, GIF, TIFF, HEIC/HEIF, AVIF"
# 25 Mpx (5000 x 5000) is decoded; beyond that a file is refused before its pixels are read,
# which is what stops decompression bombs (a few KB declaring gigapixels).
MAX_PIXELS = 26_000_000


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message names the file."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High-bit-depth greyscale: stretch to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas become white, like a page behind a sticker.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes | str | os.PathLike, name: str | None = None, exif_transpose: bool = True) -> Image.Image:
    """An RGB image from bytes or a path; first frame of animations.

    ``exif_transpose`` turns photos upright as their EXIF says (uploads); dataset images keep
    their stored pixel layout, which is what their annotation boxes refer to.
    """
    if name is None:
        name = os.path.basename(os.fspath(data)) if not isinstance(data, bytes) else "<upload>"
    if isinstance(data, bytes):
        if not data:
            raise ImageDecodeError(name, "the file is empty (0 bytes)")
        source: io.BytesIO | str = io.BytesIO(data)
    else:
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise ImageDecodeError(name, "no such file")
        if os.path.getsize(path) == 0:
            raise ImageDecodeError(name, "the file is empty (0 bytes)")
        source = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise ImageDecodeError(name, f"the image has no pixels ({width}x{height})")
                if width * height > MAX_PIXELS:
                    raise ImageDecodeError(
                        name, f"the image is too large ({width}x{height} = {width * height / 1e6:.0f} Mpx; "
                              f"the limit is {MAX_PIXELS / 1e6:.0f} Mpx, which also stops decompression bombs)")
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.load()
                if exif_transpose:
                    image = ImageOps.exif_transpose(image)
                return _to_rgb(image).copy()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, f"the image is too large: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, f"not an image file Pillow can read ({READABLE_FORMATS})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
            MemoryError, ZeroDivisionError, struct.error) as exc:
        # Truncated or corrupt data surfaces as any of these from Pillow's decoders.
        raise ImageDecodeError(name, f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def numeric_stem(name: str) -> int | None:
    """123 for ``123.png`` (the course's image ids); None for other names, "²" and absurd lengths included."""
    stem = os.path.splitext(os.path.basename(name))[0]
    if stem.isascii() and stem.isdecimal() and len(stem) <= 18:
        return int(stem)
    return None


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files in ``folder`` (not recursive), sorted by numeric stem when there is one."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith(".")]

    def key(name: str):
        number = numeric_stem(name)
        return (0, number, name) if number is not None else (1, 0, name)

    return [os.path.join(folder, n) for n in sorted(names, key=key)]
