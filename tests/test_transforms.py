"""Image preprocessing for CLIP and SAM against the upstream/reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from read.data.transforms import clip_resize_shape, preprocess_image, sam_preprocess_shape


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (336, 336), (101, 457)])
def test_sam_view_matches_upstream_sam_preprocess(hw):
    from segment_anything.modeling import Sam
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    _, sam_x, geom = preprocess_image(img, clip_size=56, sam_size=256)
    resized = ResizeLongestSide(256).apply_image(img)
    # upstream Sam.preprocess: normalise then pad bottom/right to the encoder size
    fake = type("S", (), {})()
    fake.pixel_mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    fake.pixel_std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    fake.image_encoder = type("E", (), {"img_size": 256})()
    ref = Sam.preprocess(fake, torch.from_numpy(resized).permute(2, 0, 1).float())
    torch.testing.assert_close(sam_x, ref)
    assert geom.sam_input_hw == resized.shape[:2] == sam_preprocess_shape(*hw, 256)
    assert geom.orig_hw == hw


def test_clip_view_centre_crop_by_hand():
    """A 2-colour image split at the middle column: the crop keeps the central square, so the left/right
    halves of the crop keep their colours; the crop box maps back to the central square of the original."""
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[:, 150:] = 255
    clip, _, geom = preprocess_image(img, clip_size=50, sam_size=64)
    assert clip.shape == (3, 50, 50)
    assert clip_resize_shape(100, 300, 50) == (50, 150) == geom.clip_resized_hw
    left, top, right, bottom = geom.clip_crop_box
    assert (left, top, right, bottom) == pytest.approx((100.0, 0.0, 200.0, 100.0))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(clip[:, 10, 5], (0 - mean) / std)
    torch.testing.assert_close(clip[:, 10, 45], (1 - mean) / std)


def test_clip_view_matches_transformers_pil_processor():
    from transformers import CLIPImageProcessorPil

    proc = CLIPImageProcessorPil(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, resample=3, do_convert_rgb=False
    )
    rng = np.random.default_rng(1)
    for hw in [(70, 90), (90, 61), (56, 56)]:
        img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
        ref = torch.as_tensor(np.asarray(proc(images=img, return_tensors="np")["pixel_values"][0]))
        ours, _, _ = preprocess_image(img, clip_size=56, sam_size=64)
        torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-5)


def test_bad_image_is_rejected():
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess_image(np.zeros((10, 10), dtype=np.uint8))
