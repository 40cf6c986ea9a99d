"""User images (a path, a PIL image or a numpy array) as RGB uint8 ``[H, W, 3]`` arrays, with a name for errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from read.data.base import DataError
from read.data.io import load_image

__all__ = ["as_rgb"]


def as_rgb(image, name: str | None = None) -> tuple[np.ndarray, str]:  # noqa: ANN001 - path | PIL | ndarray
    """``(RGB uint8 [H, W, 3], name)``.

    A path is read with the project's checked loader (the same decode as the datasets: OpenCV, RGB; a corrupt or
    truncated file is an error naming it). A PIL image is converted to RGB. A numpy array may be ``[H, W, 3]`` RGB
    or ``[H, W]`` grey, uint8 (or float in [0, 1]); RGBA ``[H, W, 4]`` drops alpha.

    Raises:
        DataError: unreadable file, or an array of another shape or dtype (named).
    """
    if isinstance(image, str | os.PathLike):
        return load_image(image), name or str(Path(image))
    label = name or "<image>"
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image without importing PIL here
        return np.asarray(image.convert("RGB")).copy(), name or "<PIL image>"
    if not isinstance(image, np.ndarray):
        raise DataError(f"{label}: expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    a = image
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and 0.0 <= float(a.min()) and float(a.max()) <= 1.0:
            a = (a * 255.0 + 0.5).astype(np.uint8)
        else:
            raise DataError(f"{label}: expected uint8 pixels (or floats in [0, 1]), got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise DataError(f"{label}: expected an RGB image [H, W, 3], got shape {image.shape}")
    return np.ascontiguousarray(a), name or "<array>"
