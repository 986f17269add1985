"""Request inputs -> decoded items: multipart image files, base64 JSON images, JSON texts.

Images are decoded once, completely (a truncated file, or pixel data that fails zlib's check,
fails here); grayscale images stay single-channel, so preprocessing resizes one plane, not three.
Every failure is a 4xx with a precise code: undecodable or truncated images and bad base64 are
``invalid_input`` (422), an input of the wrong modality ``wrong_modality`` (422), too many inputs
or too many pixels ``payload_too_large`` (413), another content type ``unsupported_media_type``
(415). Nothing is unpickled: images are decoded by Pillow, JSON by the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from modelfab.core.errors import ModelfabError
from modelfab.data.images import image_pixels
from modelfab.serve.schemas import PredictRequest


class ApiError(ModelfabError):
    """An HTTP error with a code for the JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


@dataclass
class RawInput:
    """One input as received: the bytes we hash and store, and the decoded item."""

    data: bytes  # image file bytes, or UTF-8 text
    modality: str  # image | text
    item: Any  # (H, W) or (H, W, 3) uint8 array, or str

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> uint8 (H, W) grayscale or (H, W, 3) RGB, fully decoded (truncated files fail here)."""
    if not data:
        raise ApiError(422, "invalid_input", "empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > max_pixels:
                    size = f"{im.width}x{im.height}"
                    raise ApiError(413, "payload_too_large", f"image {size} exceeds {max_pixels} pixels")
                im.load()
                return image_pixels(im)
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise ApiError(422, "invalid_input", "not an image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(422, "invalid_input", f"corrupt or truncated image: {exc}") from None


def _check_count(n: int, max_inputs: int) -> None:
    if n == 0:
        raise ApiError(422, "invalid_input", "no inputs")
    if n > max_inputs:
        raise ApiError(413, "payload_too_large", f"{n} inputs exceed the limit of {max_inputs} per request")


def from_json(body: bytes, modality: str, max_inputs: int, max_pixels: int) -> list[RawInput]:
    """A JSON body ``{"inputs": [{"image_b64": ...} | {"text": ...}]}`` -> decoded inputs."""
    try:
        req = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {e['msg']}") from None
    _check_count(len(req.inputs), max_inputs)
    out = []
    for i, inp in enumerate(req.inputs):
        if inp.text is not None:
            if modality != "text":
                raise ApiError(422, "wrong_modality", f"inputs.{i}: text given to an image model; send image_b64")
            out.append(RawInput(inp.text.encode(), "text", inp.text))
            continue
        if modality != "image":
            raise ApiError(422, "wrong_modality", f"inputs.{i}: an image given to a text model; send text")
        try:
            data = base64.b64decode(inp.image_b64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "invalid_input", f"inputs.{i}.image_b64: not valid base64") from None
        try:
            out.append(RawInput(data, "image", decode_image(data, max_pixels)))
        except ApiError as exc:
            raise ApiError(exc.http_status, exc.code, f"inputs.{i}: {exc}") from None
    return out


def from_files(files: list[tuple[str, bytes]], modality: str, max_inputs: int, max_pixels: int) -> list[RawInput]:
    """Multipart uploads (field name, bytes) -> decoded images (text models take JSON)."""
    if modality != "image":
        raise ApiError(422, "wrong_modality", 'a text model takes JSON {"inputs": [{"text": ...}]}, not file uploads')
    _check_count(len(files), max_inputs)
    out = []
    for i, (name, data) in enumerate(files):
        try:
            out.append(RawInput(data, "image", decode_image(data, max_pixels)))
        except ApiError as exc:
            raise ApiError(exc.http_status, exc.code, f"file {i} ({name}): {exc}") from None
    return out
