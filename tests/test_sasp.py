"""Tests of SasP (read/model/sasp.py) against hand-worked cases and plain, independent references.

The references below are written from the spec's description (section 2), not from the module: a numpy
selection grid / point order, and the official full-grid dense map + DtoC in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from read.config import SasPConfig
from read.model.sasp import (
    SASP_PRESETS,
    PointPrompts,
    SimilarityAsPoints,
    aspect_padding,
    dense_similarity_map,
    padded_selection_grid,
    similarity_as_points,
    similarity_as_points_batched,
    similarity_map,
    to_sam_frame,
)
from read.model.sasp_dtoc import _dense_window

S = 24  # token grid side of the real model (576 tokens)


# ----------------------------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------------------------


def ref_grid(sim: np.ndarray, hw: tuple[int, int], down_sample: int) -> np.ndarray:
    """Padded selection grid: 2x2 mean (ds 2) or identity (ds 1), min-max, -1 padding by the int/floor rules."""
    m = sim.reshape(S, S).astype(np.float64)
    if down_sample == 2:
        m = m.reshape(S // 2, 2, S // 2, 2).mean(axis=(1, 3))
    else:
        assert down_sample == 1
    m = (m - m.min()) / (m.max() - m.min())
    ds = m.shape[0]
    h_img, w_img = hw
    scale = ds / min(h_img, w_img)
    ph = (int(h_img * scale) - ds) // 2
    pw = (int(w_img * scale) - ds) // 2
    out = np.full((ds + 2 * max(ph, 0), ds + 2 * max(pw, 0)), -1.0)
    out[max(ph, 0) : max(ph, 0) + ds, max(pw, 0) : max(pw, 0) + ds] = m
    if ph < 0:  # F.pad with a negative pad crops
        out = out[-ph : out.shape[0] + ph]
    if pw < 0:
        out = out[:, -pw : out.shape[1] + pw]
    return out


def ref_points(grid: np.ndarray, hw, num_points, t_pos=0.8, t_neg=0.2):
    """Official order (pos desc, neg asc, neutral raster) and truncated coordinates, with plain Python."""
    h, w = grid.shape
    v = grid.reshape(-1)
    idx = range(v.size)
    pos = sorted([i for i in idx if v[i] >= t_pos], key=lambda i: -v[i])
    neg = sorted([i for i in idx if 0 <= v[i] <= t_neg], key=lambda i: v[i])
    neu = [i for i in idx if t_neg < v[i] < t_pos]
    sel = (pos + neg + neu)[:num_points]
    H, W = hw
    coords = [
        [int(min((i % w + 0.5) * (W / w), W - 1)), int(min((i // w + 0.5) * (H / h), H - 1))] for i in sel
    ]
    labels = [1 if i in pos else 0 if i in neg else -1 for i in sel]
    return np.array(coords, dtype=np.float64).reshape(-1, 2), np.array(labels), sel


def ref_dense_map(sim: torch.Tensor, hw, clip_size=336) -> torch.Tensor:
    """origin_sm (spec 2.3) in float64: min-max, s x s -> clip -> zero pad -> (H, W)."""
    m = sim.double()
    m = (m - m.min()) / (m.max() - m.min())
    m = F.interpolate(
        m.reshape(1, 1, S, S), size=(clip_size, clip_size), mode="bilinear", align_corners=False
    )
    h, w = hw
    scale = clip_size / min(h, w)
    ph = (int(h * scale) - clip_size) // 2
    pw = (int(w * scale) - clip_size) // 2
    m = F.pad(m, (pw, pw, ph, ph), value=0.0)
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def ref_dtoc(dense: torch.Tensor, points: torch.Tensor, euclidean: bool = False) -> torch.Tensor:
    """Official full-grid DtoC (spec 2.6): softmax over all pixels, distance to all pixels, weighted mean."""
    h, w = dense.shape
    gy, gx = torch.meshgrid(
        torch.arange(h, dtype=dense.dtype), torch.arange(w, dtype=dense.dtype), indexing="ij"
    )
    gx, gy = gx.reshape(-1), gy.reshape(-1)
    p = torch.softmax(dense.reshape(-1), dim=0)
    out = []
    for x, y in points.to(dense.dtype):
        d = (gx - x) ** 2 + (gy - y) ** 2
        if euclidean:
            d = d.sqrt()
        wt = torch.exp(-d) * p
        wt = wt / wt.sum()
        out.append(torch.stack([(gx * wt).sum(), (gy * wt).sum()]))
    return torch.stack(out)


def blob(r0=8.0, c0=15.0, sigma=2.0) -> torch.Tensor:
    r, c = torch.meshgrid(
        torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
    )
    return torch.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * sigma**2)).reshape(-1)


RANDOM_SIZES = [
    (480, 640),
    (640, 480),
    (333, 517),
    (97, 1000),
    (1000, 61),
    (535, 800),
    (800, 535),
    (20, 30),
    (601, 900),
]


# ----------------------------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------------------------


def test_geometry_cases_include_negative_pads():
    # 535 and 601 are sizes where int(side * (target / side)) == target - 1, so the official pad is -1 (crop).
    # long side: int(800 * 12 / 535) = int(17.94) = 17 -> (17 - 12) // 2 = 2; int(900 * 336 / 601) = 503 -> 83
    assert aspect_padding((535, 800), 12) == (-1, 2)
    assert aspect_padding((601, 900), 336) == (-1, 83)
    assert aspect_padding((480, 640), 12) == (0, 2)


def test_gaussian_blob_positives_inside_blob():
    # 480x640: CLIP crop covers x in [80, 560); one token = 20 px. Token (8, 15) centre -> (390, 170).
    coords, labels = similarity_as_points(
        blob() + 0.01 * torch.rand(576, generator=torch.Generator().manual_seed(0)), (480, 640)
    )
    assert coords.shape == (30, 2) and labels.shape == (30,)
    centre = torch.tensor([390.0, 170.0])
    dist = (coords - centre).norm(dim=-1)
    assert (labels == 1).sum() >= 1
    assert (dist[labels == 1] < 60).all(), dist[labels == 1]
    assert (dist[labels == 0] > 100).all()
    # the strongest positive comes first: the 2x2 cell holding the peak, grid cell (4, 7) -> (9.5*40, 4.5*40)
    assert (coords[0] - torch.tensor([380.0, 180.0])).abs().max() < 0.5


@pytest.mark.parametrize("hw", RANDOM_SIZES)
def test_matches_numpy_reference_and_padding_never_negative(hw):
    g = torch.Generator().manual_seed(hash(hw) % 1000)
    sim = torch.randn(576, generator=g)
    grid = ref_grid(sim.numpy(), hw, 2)
    for num_points in (30, 1000):
        coords, labels = similarity_as_points(sim, hw, num_points=num_points, continuous=False)
        rc, rl, sel = ref_points(grid, hw, num_points)
        np.testing.assert_array_equal(coords.numpy(), rc)
        np.testing.assert_array_equal(labels.numpy(), rl)
        values = grid.reshape(-1)[sel]
        assert (values >= 0).all(), "a padding cell was selected"
        assert (values[rl == 0] <= 0.2).all() and (values[rl == 1] >= 0.8).all()
    np.testing.assert_allclose(padded_selection_grid(sim, hw, 2).numpy(), grid, atol=1e-5, rtol=0)


@pytest.mark.parametrize("down_sample", [1, 2])
def test_label_counts_follow_thresholds(down_sample):
    sim = torch.randn(576, generator=torch.Generator().manual_seed(3))
    hw = (300, 700)
    grid = ref_grid(sim.numpy(), hw, down_sample)
    n_pos = int((grid >= 0.7).sum())
    n_neg = int(((grid >= 0) & (grid <= 0.3)).sum())
    n_cells = (S // down_sample) ** 2
    _, labels = similarity_as_points(
        sim, hw, num_points=10_000, t_pos=0.7, t_neg=0.3, down_sample=down_sample
    )
    assert labels.numel() == n_cells
    assert int((labels == 1).sum()) == n_pos and int((labels == 0).sum()) == n_neg
    assert int((labels == -1).sum()) == n_cells - n_pos - n_neg
    _, labels = similarity_as_points(sim, hw, num_points=30, t_pos=0.7, t_neg=0.3, down_sample=down_sample)
    exp_pos = min(n_pos, 30)
    exp_neg = min(n_neg, 30 - exp_pos)
    assert labels.tolist() == [1] * exp_pos + [0] * exp_neg + [-1] * (30 - exp_pos - exp_neg)


def test_hand_worked_discrete_coordinates():
    tok = torch.zeros(S, S)
    tok[4:6, 10:12] = 10.0  # grid cell (2, 5) = 1 after 2x2 pooling + min-max
    tok[20:22, 0:2] = -10.0  # grid cell (10, 0) = 0; every other cell 0.5 (neutral)
    sim = tok.reshape(-1)
    # 480x640: 12x16 grid (pad_w 2), cell = 40 px. (2, 5) -> col 7 -> (300, 100); (10, 0) -> col 2 -> (100, 420);
    # neutral in raster order: (0, 0) -> (100, 20), (0, 1) -> (140, 20).
    coords, labels = similarity_as_points(sim, (480, 640), continuous=False)
    assert labels[:4].tolist() == [1, 0, -1, -1] and (labels[2:] == -1).all()
    assert coords[:4].tolist() == [[300.0, 100.0], [100.0, 420.0], [100.0, 20.0], [140.0, 20.0]]
    # 500x700: new_w = int(16.8) = 16 -> pad_w 2, 12x16 grid, scale_w 43.75, scale_h 41.67.
    # (2, 5) -> (7.5 * 43.75, 2.5 * 41.67) = (328.125, 104.17) -> (328, 104); (10, 0) -> (109.375, 437.5) -> (109, 437)
    coords, _ = similarity_as_points(sim, (500, 700), continuous=False)
    assert coords[:2].tolist() == [[328.0, 104.0], [109.0, 437.0]]
    # continuous stays within a fraction of a pixel of the discrete points
    cont, _ = similarity_as_points(sim, (500, 700))
    assert (cont - coords).abs().max() < 0.5


def test_threshold_boundaries_are_inclusive():
    # down_sample 1, values exactly 1, 0.8, 0.5, 0.2, 0 after min-max: >= t_pos is positive, <= t_neg negative.
    tok = torch.full((S, S), 0.5)
    tok[0, 0], tok[0, 1], tok[0, 2], tok[0, 3] = 0.8, 1.0, 0.2, 0.0
    _, labels = similarity_as_points(
        tok.reshape(-1), (480, 480), down_sample=1, num_points=5, continuous=False
    )
    assert labels.tolist() == [1, 1, 0, 0, -1]
    coords, _ = similarity_as_points(
        tok.reshape(-1), (480, 480), down_sample=1, num_points=5, continuous=False
    )
    # 24x24 grid on 480x480, cell = 20 px. Order: 1.0 (col 1), 0.8 (col 0), 0.0 (col 3), 0.2 (col 2), then the
    # first neutral cell in raster order, (0, 4).
    assert coords.tolist() == [[30.0, 10.0], [10.0, 10.0], [70.0, 10.0], [50.0, 10.0], [90.0, 10.0]]


def test_coordinates_inside_image_random_sizes():
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        h, w = (int(v) for v in torch.randint(8, 2000, (2,), generator=g))
        coords, labels = similarity_as_points(torch.randn(576, generator=g), (h, w))
        assert torch.isfinite(coords).all()
        assert (coords[:, 0] >= 0).all() and (coords[:, 0] <= w - 1).all()
        assert (coords[:, 1] >= 0).all() and (coords[:, 1] <= h - 1).all()
        assert set(labels.tolist()) <= {-1, 0, 1}


def test_constant_map_gives_neutral_points_and_no_nan():
    sim = torch.full((576,), 3.0, requires_grad=True)
    coords, labels = similarity_as_points(sim, (480, 640))
    assert torch.isfinite(coords).all() and (labels == -1).all() and labels.numel() == 30
    # documented: first 30 cells in raster order; row 0 of the 12x16 grid starts at padded column 2
    disc, _ = similarity_as_points(sim.detach(), (480, 640), continuous=False)
    assert disc[:3].tolist() == [[100.0, 20.0], [140.0, 20.0], [180.0, 20.0]]
    coords.sum().backward()
    assert torch.isfinite(sim.grad).all()
    dense = dense_similarity_map(sim.detach(), (480, 640), 336)
    assert torch.isfinite(dense).all() and abs(float(dense[240, 320]) - 0.5) < 1e-6
    _, labels = similarity_as_points(sim.detach(), (480, 640), variant="paper")
    assert (labels == -1).all()


# ----------------------------------------------------------------------------------------------------------------
# Batching and dtypes
# ----------------------------------------------------------------------------------------------------------------


def test_batched_equals_loop():
    g = torch.Generator().manual_seed(11)
    sizes = [(480, 640), (1000, 61), (535, 800), (333, 517)]
    sims = torch.randn(len(sizes), 576, generator=g)
    for variant in ("official", "paper"):
        coords, labels, valid = similarity_as_points_batched(sims, torch.tensor(sizes), variant=variant)
        for i, hw in enumerate(sizes):
            c, lab = similarity_as_points(sims[i], hw, variant=variant)
            k = lab.numel()
            assert valid[i, :k].all() and not valid[i, k:].any()
            torch.testing.assert_close(coords[i, :k], c, atol=1e-5, rtol=0)
            assert torch.equal(labels[i, :k], lab)


def test_tiny_grid_fills_missing_slots():
    # 8x8 tokens (tiny CLIP), down_sample 2 -> 4x4 = 16 cells < 30 points.
    sim = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    coords, labels, valid = similarity_as_points_batched(sim, [(100, 100), (49, 80)], clip_size=112)
    assert coords.shape == (2, 16, 2)
    assert valid[0].all()
    # 49x80 at ds 4: int(49 * (4 / 49)) = 3 -> pad_h = -1 crops the top and bottom rows; int(80 * 4 / 49) = 6 ->
    # pad_w = 1: a 2x6 grid with 2x4 = 8 selectable cells
    assert (
        int(valid[1].sum()) == 8 and (labels[1][~valid[1]] == -1).all() and (coords[1][~valid[1]] == 0).all()
    )


def test_bf16_and_fp32_agree():
    sim = blob() + 0.05 * torch.randn(576, generator=torch.Generator().manual_seed(2))
    hw = (480, 640)
    # same values: bf16 input is computed in fp32 internally
    c16, l16 = similarity_as_points(sim.bfloat16(), hw)
    c32, l32 = similarity_as_points(sim.bfloat16().float(), hw)
    assert c16.dtype == torch.float32
    assert torch.equal(l16, l32)
    torch.testing.assert_close(c16, c32, atol=1e-5, rtol=0)
    # fp32 vs bf16-rounded similarities: same point set (a blob has no near-ties at the thresholds here)
    c_full, l_full = similarity_as_points(sim, hw)
    key = lambda c, lab: sorted(zip(c.round().long().tolist(), lab.tolist(), strict=True))  # noqa: E731
    assert key(c_full, l_full) == key(c16, l16)
    torch.testing.assert_close(
        torch.sort(c_full.sum(-1)).values, torch.sort(c16.sum(-1)).values, atol=0.05, rtol=0
    )


# ----------------------------------------------------------------------------------------------------------------
# Dense map and DtoC against the full-grid computation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(480, 640), (97, 1000), (601, 900), (20, 30)])
def test_dense_window_values_equal_full_map(hw):
    sim = torch.randn(576, generator=torch.Generator().manual_seed(1))
    full = ref_dense_map(sim, hw)
    # fp32 (ours, F.interpolate's own fp32 index arithmetic) vs the float64 reference
    torch.testing.assert_close(dense_similarity_map(sim, hw, 336).double(), full, atol=2e-4, rtol=0)
    tokens = ((sim - sim.min()) / (sim.max() - sim.min())).reshape(1, S, S)
    g = torch.Generator().manual_seed(2)
    ys = torch.randint(0, hw[0], (1, 3, 5), generator=g)
    xs = torch.randint(0, hw[1], (1, 3, 5), generator=g)
    pads = torch.tensor([aspect_padding(hw, 336)])
    vals = _dense_window(tokens, ys, xs, torch.tensor([hw]), pads, 336)
    expect = full[ys[0][:, :, None], xs[0][:, None, :]]
    torch.testing.assert_close(vals[0].double(), expect, atol=5e-6, rtol=0)


@pytest.mark.parametrize("hw", [(480, 640), (333, 517), (97, 1000), (1000, 61), (601, 900), (20, 30)])
def test_windowed_dtoc_equals_full_grid(hw):
    sim = blob(r0=5.0, c0=3.0) + 0.3 * torch.randn(576, generator=torch.Generator().manual_seed(4))
    disc, _ = similarity_as_points(sim, hw, continuous=False)
    cont, _ = similarity_as_points(sim, hw, continuous=True)
    ref = ref_dtoc(ref_dense_map(sim, hw), disc)
    assert (cont.double() - ref).abs().max() < 1e-4
    assert (cont - disc).abs().max() > 1e-4  # DtoC is not the identity (border points move by ~0.3 px)


def test_windowed_dtoc_paper_variant_euclidean():
    hw = (200, 300)
    sim = torch.randn(576, generator=torch.Generator().manual_seed(9))
    disc, _ = similarity_as_points(sim, hw, continuous=False, variant="paper")
    cont, _ = similarity_as_points(sim, hw, continuous=True, variant="paper")
    ref = ref_dtoc(ref_dense_map(sim, hw), disc, euclidean=True)
    assert (cont.double() - ref).abs().max() < 1e-4
    # the Euclidean kernel is much wider than the squared one: it moves points measurably more
    sq = ref_dtoc(ref_dense_map(sim, hw), disc)
    assert (ref - disc.double()).abs().max() > 2 * (sq - disc.double()).abs().max()


def test_gradient_reaches_sim_and_matches_full_grid():
    hw = (60, 80)
    sim = (blob() + 0.3 * torch.randn(576, generator=torch.Generator().manual_seed(6))).requires_grad_(True)
    coords, _ = similarity_as_points(sim, hw)
    weights = torch.randn(coords.shape, generator=torch.Generator().manual_seed(8))
    (coords * weights).sum().backward()
    assert sim.grad is not None and torch.isfinite(sim.grad).all() and sim.grad.abs().max() > 0
    sim64 = sim.detach().double().requires_grad_(True)
    disc, _ = similarity_as_points(sim.detach(), hw, continuous=False)
    ref = ref_dtoc(ref_dense_map(sim64, hw), disc)
    (ref * weights.double()).sum().backward()
    torch.testing.assert_close(
        sim.grad.double(), sim64.grad, atol=1e-6 * float(sim64.grad.abs().max()) + 1e-9, rtol=1e-3
    )
    # labels / discrete coordinates carry no gradient
    disc_c, _ = similarity_as_points(sim, hw, continuous=False)
    assert not disc_c.requires_grad


# ----------------------------------------------------------------------------------------------------------------
# SAM frame, paper variant, presets, prompter
# ----------------------------------------------------------------------------------------------------------------


def test_to_sam_frame_matches_upstream():
    from segment_anything.utils.transforms import ResizeLongestSide

    tf = ResizeLongestSide(1024)
    g = torch.Generator().manual_seed(12)
    # (5, 2048): 5 * 0.5 = 2.5 -> int(3.0) = 3 rows (round-half-up, not banker's rounding)
    sizes = [(480, 640), (1000, 61), (3000, 4000), (333, 517), (1024, 1024), (5, 2048)]
    coords = torch.rand(len(sizes), 7, 2, generator=g) * torch.tensor([[[60.0, 60.0]]])
    out = to_sam_frame(coords, torch.tensor(sizes), 1024)
    for i, hw in enumerate(sizes):
        expect = tf.apply_coords(coords[i].double().numpy(), hw)
        np.testing.assert_allclose(out[i].double().numpy(), expect, atol=1e-4, rtol=0)


def test_paper_variant_thresholds_hand_made_map():
    # 24x24 map, down_sample 1 (identity grid): 50 cells at 1.0, 50 at 0.0, 476 at 0.6.
    # mu = (50 + 0.6 * 476) / 576 = 0.58264; sigma = 0.21176 (population).
    # eps 0.5: t_pos = 0.6885, t_neg = 0.4768 -> 0.6 is neutral; eps 0.05: t_pos = 0.5932 -> 0.6 is positive.
    vals = torch.full((576,), 0.6)
    perm = torch.randperm(576, generator=torch.Generator().manual_seed(0))
    vals[perm[:50]] = 1.0
    vals[perm[50:100]] = 0.0
    mu = (50 + 0.6 * 476) / 576
    sigma = math.sqrt((50 + 0.36 * 476) / 576 - mu**2)
    assert abs(mu - 0.58264) < 1e-4 and abs(sigma - 0.21176) < 1e-4
    hw = (480, 480)
    _, labels = similarity_as_points(vals, hw, down_sample=1, variant="paper", eps=0.5)
    assert labels.numel() == 576  # no num_points cap
    assert labels.tolist() == [1] * 50 + [0] * 50 + [-1] * 476
    _, labels = similarity_as_points(vals, hw, down_sample=1, variant="paper", eps=0.05)
    assert labels.tolist() == [1] * 526 + [0] * 50
    # sigma is the population std (Var = E[(S - mu)^2]): pick eps between (0.6 - mu) / sigma_pop and
    # (0.6 - mu) / sigma_sample, so 0.6 is positive with the population std and would be neutral with the sample std.
    sigma_sample = sigma * math.sqrt(576 / 575)
    eps = 0.5 * ((0.6 - mu) / sigma + (0.6 - mu) / sigma_sample)
    _, labels = similarity_as_points(vals, hw, down_sample=1, variant="paper", eps=eps)
    assert int((labels == 1).sum()) == 526
    # official variant on the same map: fixed 0.8/0.2 thresholds, capped at 30 points
    _, labels = similarity_as_points(vals, hw, down_sample=1)
    assert labels.tolist() == [1] * 30


def test_presets_table_and_prompter_uses_config_verbatim():
    assert set(SASP_PRESETS) == {"read_7b", "read_13b_eval", "read_13b_stage1", "read_13b_stage2"}
    assert SASP_PRESETS["read_13b_eval"] == {"num_points": 60, "t_pos": 0.6, "t_neg": 0.2, "down_sample": 1}
    # the YAML loader expands presets; the prompter must not re-apply one over explicit values
    p = SimilarityAsPoints(SasPConfig(preset="read_13b_eval", num_points=30), clip_size=336, sam_size=1024)
    assert p.cfg.num_points == 30


def test_prompter_end_to_end():
    g = torch.Generator().manual_seed(13)
    p, n, c = 3, 576, 16
    image_hidden = torch.randn(p, n, c, generator=g)
    seg_hidden = torch.randn(p, c, generator=g)
    hw = torch.tensor([[480, 640], [1000, 61], [3000, 4000]])
    prompter = SimilarityAsPoints(SasPConfig(num_points=60, t_pos=0.6, t_neg=0.2, down_sample=1), clip_size=336, sam_size=1024)
    out = prompter(image_hidden, seg_hidden, hw)
    assert isinstance(out, PointPrompts)
    assert out.coords.shape == (3, 60, 2) and out.labels.shape == (3, 60) and out.labels.dtype == torch.long
    torch.testing.assert_close(out.similarity, similarity_map(image_hidden, seg_hidden))
    torch.testing.assert_close(out.similarity[1], image_hidden[1] @ seg_hidden[1])
    ci, lab, _ = similarity_as_points_batched(out.similarity, hw, num_points=60, t_pos=0.6, down_sample=1)
    torch.testing.assert_close(out.coords_image, ci)
    assert torch.equal(out.labels, lab)
    torch.testing.assert_close(out.coords, to_sam_frame(ci, hw, 1024))
    assert (out.coords[..., 0] <= 1024).all() and (out.coords[2, :, 0] > 0).any()


def test_prompter_bf16_hidden_states():
    # small-integer states make every dot product exact in bf16, so bf16 and fp32 runs must agree
    g = torch.Generator().manual_seed(14)
    image_hidden = torch.randint(-3, 4, (2, 576, 8), generator=g).float()
    seg_hidden = torch.randint(-3, 4, (2, 8), generator=g).float()
    hw = torch.tensor([[480, 640], [700, 500]])
    prompter = SimilarityAsPoints(SasPConfig(), clip_size=336, sam_size=1024)
    a = prompter(image_hidden, seg_hidden, hw)
    b = prompter(image_hidden.bfloat16(), seg_hidden.bfloat16(), hw)
    assert b.similarity.dtype == torch.bfloat16 and b.coords.dtype == torch.float32
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.coords, b.coords, atol=1e-4, rtol=0)
