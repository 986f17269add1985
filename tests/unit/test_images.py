from __future__ import annotations

from pathlib import Path

import pytest

from modelfab.core.errors import DataError
from modelfab.data.images import inspect_image, load_rgb
from tests.conftest import write_image


def test_corrupt_truncated_empty_and_non_image(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", size=(64, 64))
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    with pytest.raises(DataError, match=r"truncated|corrupt"):
        inspect_image(truncated)
    with pytest.raises(DataError, match="empty file"):
        inspect_image(empty)
    with pytest.raises(DataError, match="not an image"):
        inspect_image(text)
    with pytest.raises(DataError):
        inspect_image(garbage)


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("RGB", (40, 30)),
        ("L", (30, 30)),
        ("RGBA", (20, 20)),
        ("CMYK", (16, 16)),
        ("I;16", (24, 18)),
        ("RGB", (2000, 3)),
        ("L", (2, 900)),
    ],
)
def test_odd_but_valid_images(tmp_path: Path, mode: str, size: tuple[int, int]) -> None:
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = write_image(tmp_path / f"img{suffix}", size=size, mode=mode)
    info = inspect_image(path)
    assert (info.width, info.height) == size
    rgb = load_rgb(path)
    assert rgb.shape == (size[1], size[0], 3) and rgb.dtype.name == "uint8"


def test_sixteen_bit_scaled(tmp_path: Path) -> None:
    path = write_image(tmp_path / "deep.png", size=(32, 32), mode="I;16")
    rgb = load_rgb(path)
    assert rgb.max() > 200  # full 16-bit range mapped onto 8 bits, not clipped to 255 everywhere
    assert rgb.min() < 50


def test_grayscale_stays_one_plane_and_preprocesses_like_its_rgb_copy(tmp_path: Path) -> None:
    import io

    import numpy as np
    import torch
    from PIL import Image

    from modelfab.serve.inputs import ApiError, decode_image
    from modelfab.zoo.vision.preprocess import preprocess_images

    gray = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG")
    decoded = decode_image(buf.getvalue(), 10_000)
    assert decoded.shape == (37, 53) and np.array_equal(decoded, gray)  # lossless, one plane
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    one = preprocess_images([decoded], 32, mean, std)
    three = preprocess_images([np.repeat(decoded[:, :, None], 3, axis=2)], 32, mean, std)
    assert one.shape == three.shape == (1, 3, 32, 32)
    torch.testing.assert_close(one, three, rtol=0, atol=1e-6)  # resizing one plane then repeating is exact
    with pytest.raises(ApiError, match=r"truncated|corrupt"):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2], 10_000)
    with pytest.raises(ApiError, match="exceeds 1000 pixels"):
        decode_image(buf.getvalue(), 1_000)
