"""SasP on any token grid and any mask-decoder frame (issue 18): non-square ``full`` grids (Qwen2.5-VL's merged-patch
grid covering the whole image) and SAM 2's square input frame, each against a slow reference written here in plain
NumPy / loops, plus the per-query grid grouping of the prompter. The official square ``center_crop`` case is
covered, unchanged, by ``test_sasp.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from read.config import SasPConfig
from read.model.sasp import (
    SimilarityAsPoints,
    dense_similarity_map,
    padded_selection_grid,
    similarity_as_points,
    to_input_frame,
)


def ref_bilinear(m: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping (``align_corners=False``), by explicit loops over
    the formula ``src = (dst + 0.5) * in / out - 0.5`` clamped at 0."""
    in_h, in_w = m.shape

    def taps(n_out: int, n_in: int) -> list[tuple[int, int, float]]:
        out = []
        for d in range(n_out):
            src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(np.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            out.append((i0, i1, src - i0 if i0 < n_in - 1 else 0.0))
        return out

    ty, tx = taps(out_h, in_h), taps(out_w, in_w)
    res = np.zeros((out_h, out_w))
    for y, (y0, y1, ly) in enumerate(ty):
        for x, (x0, x1, lx) in enumerate(tx):
            res[y, x] = ((1 - ly) * ((1 - lx) * m[y0, x0] + lx * m[y0, x1])
                         + ly * ((1 - lx) * m[y1, x0] + lx * m[y1, x1]))
    return res


def ref_full_view(sim: np.ndarray, grid: tuple[int, int], hw: tuple[int, int], num_points: int,
                  t_pos: float = 0.8, t_neg: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SasP on a ``full`` grid, slowly: 2x2 mean, min-max, official class order, truncated coordinates on the
    unpadded grid, then DtoC over every pixel of the dense map (token map min-maxed and resized to (H, W))."""
    gh, gw = grid
    m = sim.reshape(gh, gw).astype(np.float64)
    g = m.reshape(gh // 2, 2, gw // 2, 2).mean(axis=(1, 3))
    g = (g - g.min()) / (g.max() - g.min())
    dh, dw = g.shape
    v = g.reshape(-1)
    pos = sorted([i for i in range(v.size) if v[i] >= t_pos], key=lambda i: -v[i])
    neg = sorted([i for i in range(v.size) if 0 <= v[i] <= t_neg], key=lambda i: v[i])
    neu = [i for i in range(v.size) if t_neg < v[i] < t_pos]
    sel = (pos + neg + neu)[:num_points]
    H, W = hw
    disc = np.array([[int(min((i % dw + 0.5) * (W / dw), W - 1)), int(min((i // dw + 0.5) * (H / dh), H - 1))]
                     for i in sel], dtype=np.float64)
    labels = np.array([1 if i in pos else 0 if i in neg else -1 for i in sel])
    tokens = (m - m.min()) / (m.max() - m.min())
    dense = ref_bilinear(tokens, H, W)
    gy, gx = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    p = np.exp(dense - dense.max())
    cont = []
    for x, y in disc:
        wt = np.exp(-((gx - x) ** 2 + (gy - y) ** 2)) * p
        wt /= wt.sum()
        cont.append([(gx * wt).sum(), (gy * wt).sum()])
    return disc, np.array(cont), labels, dense


def blob(gh: int, gw: int, r0: float, c0: float, sigma: float = 1.5, seed: int = 0) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    noise = 0.2 * torch.rand(gh, gw, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (torch.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * sigma**2)) + noise).reshape(-1).float()


@pytest.mark.parametrize(("grid", "hw"), [((10, 16), (150, 230)), ((16, 8), (301, 140)), ((6, 6), (45, 77))])
def test_full_view_points_equal_slow_reference(grid, hw):
    gh, gw = grid
    sim = blob(gh, gw, r0=gh * 0.3, c0=gw * 0.6)
    disc_ref, cont_ref, labels_ref, dense_ref = ref_full_view(sim.double().numpy(), grid, hw, num_points=12)
    disc, labels = similarity_as_points(sim, hw, num_points=12, grid_hw=grid, view="full", continuous=False)
    cont, labels_c = similarity_as_points(sim, hw, num_points=12, grid_hw=grid, view="full", continuous=True)
    np.testing.assert_array_equal(labels.numpy(), labels_ref)
    np.testing.assert_array_equal(labels_c.numpy(), labels_ref)
    np.testing.assert_array_equal(disc.numpy(), disc_ref)
    assert np.abs(cont.double().numpy() - cont_ref).max() < 1e-3
    assert np.abs(cont.numpy() - disc.numpy()).max() > 1e-3  # DtoC moved some point
    dense = dense_similarity_map(sim, hw, 336, grid_hw=grid, view="full").double().numpy()
    assert np.abs(dense - dense_ref).max() < 1e-5
    # the positives sit on the blob: the first point is inside its cell span (rows ~0.3 gh, cols ~0.6 gw)
    x, y = disc_ref[0]
    assert abs(y / hw[0] - (gh * 0.3 + 0.5) / gh) < 2.5 / gh and abs(x / hw[1] - (gw * 0.6 + 0.5) / gw) < 2.5 / gw


def test_full_view_has_no_padding_and_square_center_crop_is_required():
    sim = torch.arange(8 * 12, dtype=torch.float32)
    grid = padded_selection_grid(sim, (90, 400), 2, grid_hw=(8, 12), view="full")
    assert grid.shape == (4, 6) and float(grid.min()) == 0.0 and float(grid.max()) == 1.0
    with pytest.raises(ValueError, match="square"):
        similarity_as_points(sim, (90, 400), grid_hw=(8, 12), view="center_crop")
    with pytest.raises(ValueError, match="does not hold"):
        similarity_as_points(sim, (90, 400), grid_hw=(8, 11), view="full")


def test_square_frame_by_hand():
    coords = torch.tensor([[[0.0, 0.0], [100.0, 50.0], [199.0, 99.0]]])
    out = to_input_frame(coords, [(100, 200)], 1024, "square")
    expect = torch.tensor([[[0.0, 0.0], [512.0, 512.0], [199 * 1024 / 200, 99 * 1024 / 100]]])
    torch.testing.assert_close(out, expect)
    # the official frame: longest side 200 -> 1024, so both axes scale by 5.12 (100 * 5.12 = 512 rows)
    torch.testing.assert_close(to_input_frame(coords, [(100, 200)], 1024, "longest_side"), coords * 5.12)
    with pytest.raises(ValueError, match="frame"):
        to_input_frame(coords, [(100, 200)], 1024, "letterbox")


def test_prompter_groups_queries_by_grid_and_pads_k():
    """Three queries on two grids (padded image states) equal three single calls on each query's own grid."""
    cfg = SasPConfig(num_points=10)
    sasp = SimilarityAsPoints(cfg, clip_size=336, sam_size=64, view="full", frame="square")
    g = torch.Generator().manual_seed(3)
    grids = [(4, 6), (2, 4), (4, 6)]
    sizes = [(40, 60), (90, 50), (33, 70)]
    n_max = 24
    states = torch.zeros(3, n_max, 8)
    seg = torch.randn(3, 8, generator=g)
    for i, (gh, gw) in enumerate(grids):
        states[i, : gh * gw] = torch.randn(gh * gw, 8, generator=g)
        states[i, gh * gw:] = 1e3  # padding must never be read
    out = sasp(states, seg, torch.tensor(sizes), grid_hw=torch.tensor(grids))
    assert out.coords.shape == (3, 6, 2)  # K = min(10, 2 x 3 selection cells) = 6; the 2x4 grid has 2 cells
    for i, (gh, gw) in enumerate(grids):
        sim = states[i, : gh * gw] @ seg[i]
        c, lab = similarity_as_points(sim, sizes[i], num_points=10, grid_hw=(gh, gw), view="full")
        k = c.shape[0]
        assert k == (gh // 2) * (gw // 2)
        torch.testing.assert_close(out.coords_image[i, :k], c)
        torch.testing.assert_close(out.labels[i, :k], lab)
        assert bool(out.valid[i, :k].all()) and not bool(out.valid[i, k:].any())
        h, w = sizes[i]
        torch.testing.assert_close(out.coords[i, :k], c * torch.tensor([64 / w, 64 / h]))
        torch.testing.assert_close(out.query_similarity(i), sim)
