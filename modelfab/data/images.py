"""Image checking: every imported image is fully decoded once, so corrupt files fail at import."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelfab.core.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MAX_PIXELS = 200_000_000


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str


def inspect_image(path: Path) -> ImageInfo:
    """Decode ``path`` completely; raise DataError naming the problem if it is not a usable image."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise DataError(f"{path}: {im.width}x{im.height} exceeds {MAX_PIXELS} pixels")
                im.load()
                return ImageInfo(im.width, im.height, im.mode)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None


def image_pixels(im: Image.Image) -> np.ndarray:
    """An open image -> uint8 pixels: (H, W) for single-channel images (8-bit grayscale as is,
    16-bit and 32-bit scaled down), else (H, W, 3) RGB (alpha dropped, palette/CMYK converted)."""
    if im.mode == "L":
        return np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / max(hi - lo, 1e-12) * 255.0).astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def load_rgb(path: Path | str) -> np.ndarray:
    """Load any supported image as uint8 RGB (H, W, 3): grayscale repeated, alpha dropped,
    16-bit scaled down, CMYK converted."""
    with Image.open(path) as im:
        pixels = image_pixels(im)
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels
