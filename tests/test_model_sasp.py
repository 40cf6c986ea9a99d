"""SasP inside the tiny model: one point set per [SEG] with its own image size; gradients via points alone."""

from __future__ import annotations

import copy

import numpy as np
import torch

from read.data.base import Sample
from read.data.collate import collate
from read.data.synthetic import draw_shapes
from read.model.llava_backbone import clip_image_size, num_image_tokens
from read.model.sasp import similarity_as_points, to_sam_frame
from read.model.tokens import gather_image_states


def mixed_batch(model, tok):
    """Image 0 (60x80): a row with no [SEG] and a row with two. Image 1 (90x50): one row, one [SEG]."""
    rng = np.random.default_rng(0)
    img0, s0 = draw_shapes(rng, 60, 80, 2)
    img1, s1 = draw_shapes(rng, 90, 50, 2)
    q = "<image>\nWhat is {} in this image? Please output segmentation mask."
    samples = [
        Sample(
            image=img0,
            conversations=[
                [("<image>\nHow many shapes are there?", "There are two shapes.")],
                [(q.format("the two shapes"), "They are [SEG] and [SEG].")],
            ],
            masks=np.stack([s0[0].mask, s0[1].mask]),
        ),
        Sample(image=img1, conversations=[[(q.format(s1[0].name), "Sure, [SEG].")]], masks=s1[0].mask[None]),
    ]
    return collate(
        samples,
        tok,
        num_image_tokens=num_image_tokens(model.llava),
        clip_size=clip_image_size(model.llava),
        sam_size=model.sam.img_size,
    )


def test_one_point_set_per_seg_with_its_own_image_size(tiny_model, tiny_cfg):
    model, tok = tiny_model
    model.eval()
    batch = mixed_batch(model, tok)
    with torch.no_grad():
        out = model(batch)
        hidden = model.hidden_states(batch)
    assert [tuple(m.shape) for m in out.pred_masks] == [(2, 60, 80), (1, 90, 50)]
    assert out.queries.rows.tolist() == [1, 1, 2] and out.queries.image.tolist() == [0, 0, 1]
    s = tiny_cfg.model.sasp
    hw = {0: (60, 80), 1: (90, 50)}
    for p in range(3):
        row, col = int(out.queries.rows[p]), int(out.queries.cols[p])
        img = gather_image_states(hidden, batch.input_ids, torch.tensor([row]), tok.image_token_id)[0]
        sim = img @ hidden[row, col]
        h, w = hw[int(out.queries.image[p])]
        coords, labels = similarity_as_points(
            sim, (h, w), num_points=s.num_points, t_pos=s.t_pos, t_neg=s.t_neg, down_sample=s.down_sample,
            clip_size=clip_image_size(model.llava),
        )
        k = coords.shape[0]
        torch.testing.assert_close(out.points.coords_image[p, :k], coords)
        assert torch.equal(out.points.labels[p, :k], labels)
        assert (out.points.labels[p, k:] == -1).all()
        sam_frame = to_sam_frame(coords[None], torch.tensor([[h, w]]), model.sam.img_size)[0]
        torch.testing.assert_close(out.points.coords[p, :k], sam_frame)
        assert (coords[:, 0] <= w - 1).all() and (coords[:, 1] <= h - 1).all()


def test_gradient_reaches_lora_through_the_point_path_alone(tiny_model, tiny_cfg):
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    model.loss_cfg = copy.deepcopy(model.loss_cfg)
    model.loss_cfg.ce_weight = 0.0  # no LM loss
    model.text_hidden_fcs.register_forward_pre_hook(lambda m, args: (args[0].detach(),))  # cut the [SEG] path
    batch = mixed_batch(model, tok)
    captured = {}

    def keep(module, args, output):
        output.coords_image.retain_grad()
        output.similarity.retain_grad()
        captured["points"] = output
        return output

    prompter = model.point_prompter

    class Spy:
        def __call__(self, *a):
            return keep(None, a, prompter(*a))

    model.point_prompter = Spy()
    out = model(batch)
    out.loss.total.backward()
    pts = captured["points"]
    assert pts.similarity.grad is not None and pts.similarity.grad.abs().sum() > 0
    lora_b = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)
    # and with the point path removed too, nothing reaches the language model
    model.zero_grad()
    model.point_prompter = None
    model(batch).loss.total.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in model.named_parameters() if "lora_" in n)
