"""Image preprocessing for both towers, as the official datasets do it (spec 4.4), with the geometry kept.

CLIP (``clip-vit-large-patch14-336``, transformers-4.31 ``CLIPImageProcessor`` semantics): resize the shortest
side to ``clip_size`` with PIL bicubic (long side ``int(clip_size * long / short)``), centre-crop
``clip_size x clip_size`` (top/left offsets floored), rescale by 1/255, normalise with the CLIP mean/std. No
pad-to-square (LLaVA-1.5's own "pad" mode is not what READ uses).

SAM: upstream ``ResizeLongestSide(sam_size).apply_image`` (long side ``sam_size``, ``int(x + 0.5)`` rounding,
bilinear), normalise on the 0-255 scale with SAM's mean/std, zero-pad bottom/right to ``sam_size x sam_size``.

SAM 2 (``sam_frame="square"``): SAM 2's ``SAM2Transforms``: to [0, 1], resize to ``sam_size x sam_size`` (bilinear,
antialiased, aspect not kept; the tensor kernel torchvision's ``Resize`` uses), normalise with the ImageNet
mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image went.

    Attributes:
        orig_hw: original (H, W).
        sam_input_hw: (h', w') after resize-longest-side, before padding (SAM 2: ``(S, S)``).
        clip_resized_hw: size after the CLIP shortest-side resize.
        clip_crop_box: (left, top, right, bottom) of the CLIP crop in original-image pixels (floats).
    """

    orig_hw: tuple[int, int]
    sam_input_hw: tuple[int, int]
    clip_resized_hw: tuple[int, int]
    clip_crop_box: tuple[float, float, float, float]


def sam_preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """Upstream ``ResizeLongestSide.get_preprocess_shape``: each side ``int(side * long / max(h, w) + 0.5)``."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def clip_resize_shape(h: int, w: int, short_side: int) -> tuple[int, int]:
    """Shortest side to ``short_side``; the other ``int(short_side * long / short)`` (transformers 4.31)."""
    if h <= w:
        return short_side, int(short_side * w / h)
    return int(short_side * h / w), short_side


def clip_view_box(h: int, w: int, clip_size: int) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` in original-image pixels (floats) of the square CLIP keeps: shortest-side
    resize to ``clip_size`` (:func:`clip_resize_shape`), then the centre ``clip_size`` crop."""
    rh, rw = clip_resize_shape(h, w, clip_size)
    top, left = (rh - clip_size) // 2, (rw - clip_size) // 2
    sy, sx = h / rh, w / rw
    return (left * sx, top * sy, (left + clip_size) * sx, (top + clip_size) * sy)


def clip_preprocess(image: np.ndarray, clip_size: int = 336) -> tuple[Tensor, tuple[int, int], tuple[float, ...]]:
    """RGB uint8 ``[H, W, 3]`` -> CLIP pixel values ``[3, clip_size, clip_size]`` float32.

    Returns ``(pixels, resized_hw, crop_box_in_original_pixels)``.
    """
    h, w = image.shape[:2]
    rh, rw = clip_resize_shape(h, w, clip_size)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), resample=Image.Resampling.BICUBIC))
    top = (rh - clip_size) // 2
    left = (rw - clip_size) // 2
    crop = resized[top : top + clip_size, left : left + clip_size].astype(np.float32) / 255.0
    crop = (crop - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    box = clip_view_box(h, w, clip_size)
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))), (rh, rw), box


def sam_preprocess(image: np.ndarray, sam_size: int = 1024) -> tuple[Tensor, tuple[int, int]]:
    """RGB uint8 ``[H, W, 3]`` -> SAM input ``[3, sam_size, sam_size]`` float32 (normalised, zero-padded)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(sam_size).apply_image(image)
    h, w = resized.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
    mean = torch.tensor(SAM_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_STD).view(3, 1, 1)
    x = (x - mean) / std
    x = torch.nn.functional.pad(x, (0, sam_size - w, 0, sam_size - h))
    return x, (h, w)


def sam2_preprocess(image: np.ndarray, size: int = 1024) -> tuple[Tensor, tuple[int, int]]:
    """RGB uint8 ``[H, W, 3]`` -> SAM 2 input ``[3, size, size]`` float32 and its content size ``(size, size)``."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
    x = torch.nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x, (size, size)


def mask_input(image: np.ndarray, sam_size: int = 1024, sam_frame: str = "longest_side"
               ) -> tuple[Tensor, tuple[int, int]]:
    """The mask decoder's view of an RGB uint8 image: ``([3, S, S], content (h, w))`` for its input frame
    (``longest_side``: SAM, :func:`sam_preprocess`; ``square``: SAM 2, :func:`sam2_preprocess`)."""
    if sam_frame == "longest_side":
        return sam_preprocess(image, sam_size)
    if sam_frame == "square":
        return sam2_preprocess(image, sam_size)
    raise ValueError(f"unknown mask-decoder frame {sam_frame!r} (expected longest_side or square)")


def preprocess_image(
    image: np.ndarray, *, clip_size: int = 336, sam_size: int = 1024, sam_frame: str = "longest_side"
) -> tuple[Tensor, Tensor, ImageGeometry]:
    """Both views of one RGB uint8 image ``[H, W, 3]``.

    Args:
        sam_frame: the mask decoder's input frame: ``longest_side`` (SAM) or ``square`` (SAM 2).

    Returns:
        ``(clip [3, clip_size, clip_size], sam [3, sam_size, sam_size], geometry)``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    clip, resized_hw, box = clip_preprocess(image, clip_size)
    sam, sam_hw = mask_input(image, sam_size, sam_frame)
    geom = ImageGeometry(
        orig_hw=(int(image.shape[0]), int(image.shape[1])),
        sam_input_hw=sam_hw,
        clip_resized_hw=resized_hw,
        clip_crop_box=box,
    )
    return clip, sam, geom
