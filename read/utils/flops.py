"""Model FLOPs of a forward (and the backward it implies), counted from the shapes that reach each layer.

Written out per layer kind (2 FLOPs per multiply-add):

* ``nn.Linear``: ``2 * in * out * tokens``;
* ``nn.Conv2d``: ``2 * (C_in / groups) * k_h * k_w * C_out * H_out * W_out * batch``;
* ``nn.ConvTranspose2d``: ``2 * C_in * (C_out / groups) * k_h * k_w * H_in * W_in * batch``;
* attention score and value products (the projections are Linear layers, counted above):
  LLaMA / CLIP self-attention ``4 * batch * T_q * T_k * d`` (the full square, as SDPA's math computes it; with causal
  masking a flash kernel skips about half), SAM's ViT attention ``4 * batch * N^2 * C`` plus its decomposed
  relative-position terms ``2 * batch * N * (H + W) * C``, SAM's two-way attention ``4 * batch * N_q * N_k * d_int``.

Backward, as autograd computes it: a layer whose input requires grad costs its forward FLOPs again for the input
gradient, and a layer whose weight requires grad costs them again for the weight gradient (an attention product
whose inputs require grad costs twice its forward). So frozen towers that no gradient crosses (CLIP, SAM's image
encoder) cost only their forward, and a frozen LLaMA under a trainable embedding costs 2x (not 3x) its forward.
Recomputation by gradient checkpointing is *not* counted: these are model FLOPs (for MFU), not hardware FLOPs.
Elementwise work (norms, activations, softmax) and the few small matmuls outside layers (SAM's hypernetwork
product, position encodings, SasP) are not counted; ``tests/test_benchmark.py`` compares the total with PyTorch's own
operator-level counter on the tiny model.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["FlopCount", "count_flops"]

SELF_ATTENTION = ("LlamaAttention", "CLIPAttention", "LlamaSdpaAttention", "LlamaFlashAttention2")


class FlopCount:
    """Forward and backward FLOPs by top-level part (``llava.model.language_model``, ``sam.image_encoder``, ...)."""

    def __init__(self) -> None:
        self.forward: dict[str, float] = defaultdict(float)
        self.backward: dict[str, float] = defaultdict(float)
        self.by_kind: dict[str, float] = defaultdict(float)  # forward FLOPs of linear / conv / attention
        self.backward_by_kind: dict[str, float] = defaultdict(float)

    @property
    def total_forward(self) -> float:
        return float(sum(self.forward.values()))

    @property
    def total_backward(self) -> float:
        return float(sum(self.backward.values()))

    @property
    def total(self) -> float:
        return self.total_forward + self.total_backward

    def as_dict(self) -> dict:
        return {"forward": dict(self.forward), "backward": dict(self.backward), "forward_by_kind": dict(self.by_kind),
                "backward_by_kind": dict(self.backward_by_kind),
                "total_forward": self.total_forward,
                "total_backward": self.total_backward, "total": self.total}


def _part(name: str) -> str:
    parts = name.split(".")
    for key in ("language_model", "vision_tower", "multi_modal_projector"):
        if key in parts:
            return ".".join(parts[: parts.index(key) + 1])
    return ".".join(parts[:2]) if len(parts) > 1 else name


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _layer_flops(module: nn.Module, args: tuple, kwargs: dict) -> tuple[float, bool, bool] | None:
    """``(forward FLOPs, input needs grad, weight needs grad)`` of one call, or ``None`` for other modules."""
    x = args[0] if args else next(iter(kwargs.values()), None)
    cls = type(module).__name__
    if isinstance(module, nn.Linear):
        tokens = x.numel() // module.in_features
        return 2.0 * module.in_features * module.out_features * tokens, _needs_grad(x), module.weight.requires_grad
    if isinstance(module, nn.Conv2d):
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        kh, kw = module.kernel_size
        ho = (h + 2 * module.padding[0] - module.dilation[0] * (kh - 1) - 1) // module.stride[0] + 1
        wo = (w + 2 * module.padding[1] - module.dilation[1] * (kw - 1) - 1) // module.stride[1] + 1
        f = 2.0 * module.in_channels // module.groups * kh * kw * module.out_channels * ho * wo * b
        return f, _needs_grad(x), module.weight.requires_grad
    if isinstance(module, nn.ConvTranspose2d):
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        kh, kw = module.kernel_size
        f = 2.0 * module.in_channels * module.out_channels // module.groups * kh * kw * h * w * b
        return f, _needs_grad(x), module.weight.requires_grad
    if cls in SELF_ATTENTION:
        hidden = kwargs.get("hidden_states", x)
        b, t, d = hidden.shape
        heads = getattr(module, "num_heads", None) or module.config.num_attention_heads
        d_attn = heads * module.head_dim
        return 4.0 * b * t * t * d_attn, _needs_grad(hidden) or _trainable(module), False
    mod = type(module).__module__
    if cls == "Attention" and mod.endswith("image_encoder"):  # SAM ViT: x [B, H, W, C]
        b, h, w, c = x.shape
        n = h * w
        rel = 2.0 * b * n * (h + w) * c if getattr(module, "use_rel_pos", False) else 0.0
        return 4.0 * b * n * n * c + rel, _needs_grad(x) or _trainable(module), False
    if cls == "Attention" and mod.endswith("transformer"):  # SAM two-way: q [B, Nq, C], k [B, Nk, C]
        q = kwargs.get("q", args[0] if args else None)
        k = kwargs.get("k", args[1] if len(args) > 1 else None)
        v = kwargs.get("v", args[2] if len(args) > 2 else None)
        f = 4.0 * q.shape[0] * q.shape[1] * k.shape[1] * module.internal_dim
        return f, _needs_grad(q, k, v) or _trainable(module), False
    return None


def _trainable(module: nn.Module) -> bool:
    return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())


@contextmanager
def count_flops(model: nn.Module):
    """Count the FLOPs of everything ``model`` runs inside the block (module docstring); yields a :class:`FlopCount`
    that is filled in as the forward passes run (the backward is derived, not run)::

        with count_flops(model) as fc:
            loss = model(batch).loss.total
        fc.total  # forward + the backward autograd will do for this graph
    """
    fc = FlopCount()
    handles = []
    for name, module in model.named_modules():
        def hook(mod, args, kwargs, _out, _name=name):  # noqa: ANN001, ANN202
            got = _layer_flops(mod, args, kwargs)
            if got is None:
                return
            f, dx, dw = got
            part = _part(_name)
            fc.forward[part] += f
            attention = not isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
            kind = "attention" if attention else "linear" if isinstance(mod, nn.Linear) else "conv"
            back = (2 * f if attention else f) * dx + f * dw
            fc.by_kind[kind] += f
            fc.backward[part] += back
            fc.backward_by_kind[kind] += back

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield fc
    finally:
        for h in handles:
            h.remove()
