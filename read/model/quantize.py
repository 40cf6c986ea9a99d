"""8-bit / 4-bit language model for inference (bitsandbytes, CUDA only); CLIP, the projector, SAM and the [SEG]
projection stay in their floating-point dtype (bf16 on GPU).

The model is rebuilt and loaded in floating point first (the same strict loading as everywhere), then each
``nn.Linear`` of the LLaMA decoder layers is replaced by a bitsandbytes layer holding the same weight, which
bitsandbytes quantizes when the layer is moved to the GPU. ``lm_head`` and the embeddings stay in floating point
(as transformers' ``llm_int8_skip_modules`` default does for the output head). The quantization settings come from a
transformers ``BitsAndBytesConfig`` (``load_in_8bit`` / ``load_in_4bit``, ``llm_int8_threshold``,
``bnb_4bit_quant_type``, ``bnb_4bit_compute_dtype``, ``bnb_4bit_use_double_quant``). LoRA adapters are merged first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["bnb_config", "linear_layers_to_quantize", "quantize_language_model", "require_cuda"]

INSTALL_HINT = "pip install bitsandbytes"


def bnb_config(quantize):  # noqa: ANN001, ANN201 - "8bit" | "4bit" | BitsAndBytesConfig
    """A transformers ``BitsAndBytesConfig`` from ``"8bit"``, ``"4bit"`` (NF4, bf16 compute, double quantization)
    or a given config.

    Raises:
        ValueError: any other value (named).
    """
    from transformers import BitsAndBytesConfig

    if isinstance(quantize, BitsAndBytesConfig):
        return quantize
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    raise ValueError(f"quantize must be '8bit', '4bit' or a transformers BitsAndBytesConfig, got {quantize!r}")


def linear_layers_to_quantize(model: nn.Module) -> list[str]:
    """Names (inside ``model``) of the ``nn.Linear`` layers of the language model's decoder layers, in order (of a
    model without LoRA layers: :func:`quantize_language_model` merges them first)."""
    lm = model.llava.model.language_model
    prefix = next(n for n, m in model.named_modules() if m is lm)
    return [f"{prefix}.{n}" for n, m in lm.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}"]


def _factory(cfg) -> Callable[[nn.Linear], nn.Module]:  # noqa: ANN001
    try:
        import bitsandbytes as bnb
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(f"8-bit / 4-bit loading needs bitsandbytes: {INSTALL_HINT}") from exc

    def make(lin: nn.Linear) -> nn.Module:
        w = lin.weight.data.to(torch.float16 if cfg.load_in_8bit else cfg.bnb_4bit_compute_dtype)
        if cfg.load_in_8bit:
            q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                    has_fp16_weights=False, threshold=cfg.llm_int8_threshold)
            q.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        else:
            q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=cfg.bnb_4bit_compute_dtype, quant_type=cfg.bnb_4bit_quant_type,
                                  compress_statistics=cfg.bnb_4bit_use_double_quant)
            q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=cfg.bnb_4bit_quant_type,
                                         compress_statistics=cfg.bnb_4bit_use_double_quant)
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
        return q

    return make


def require_cuda(quantize, device: torch.device | str):  # noqa: ANN001, ANN201
    """The ``BitsAndBytesConfig`` of ``quantize`` when ``device`` is CUDA.

    Raises:
        ValueError: ``device`` is not a CUDA device (one line naming it), or ``quantize`` is not understood.
    """
    cfg = bnb_config(quantize)
    if torch.device(device).type != "cuda":
        bits = "8-bit" if cfg.load_in_8bit else "4-bit"
        raise ValueError(f"{bits} loading (bitsandbytes) needs a CUDA device; this model would run on {device}: "
                         "drop the quantize option or run on a GPU")
    return cfg


@torch.no_grad()
def quantize_language_model(model: nn.Module, quantize, device: torch.device,  # noqa: ANN001
                            make: Callable[[nn.Linear], nn.Module] | None = None) -> int:
    """Replace the decoder layers' linear layers by 8-bit / 4-bit ones on ``device``; returns how many.

    Args:
        quantize: ``"8bit"``, ``"4bit"`` or a ``BitsAndBytesConfig`` (:func:`bnb_config`).
        device: must be a CUDA device (bitsandbytes quantizes on the GPU).
        make: layer factory (tests); default: bitsandbytes layers from the config.

    Raises:
        ValueError: ``device`` is not CUDA (one line, naming it).
    """
    cfg = require_cuda(quantize, device)
    from peft.tuners.lora import LoraLayer

    if any(isinstance(m, LoraLayer) for m in model.modules()):
        from read.model.builder import merge_lora

        merge_lora(model)
    make = make or _factory(cfg)
    names = linear_layers_to_quantize(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, make(getattr(parent, child)).to(device))
    return len(names)
