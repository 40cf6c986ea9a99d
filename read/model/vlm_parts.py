"""The vision-language part of READ as an interchangeable piece: one small adapter per model family.

An adapter is stateless: it knows where the family keeps its pieces inside the transformers model and how to turn a
:class:`read.model.batch.Batch` into last-layer states. :class:`read.model.read_model.ReadModel` and
:mod:`read.model.generate` use only these methods, so adding a family is one file with one adapter
(docs/BACKBONES.md):

* ``attr``: the ``ReadModel`` attribute that holds the transformers model (``llava`` or ``qwen``); parameter names
  start with it, so LLaVA checkpoints keep their names.
* ``language_model_prefix``: where LoRA goes (the language model only).
* ``view``: how the image-token grid covers the image (SasP, ``read.model.sasp_geometry.VIEWS``).
* ``hidden_states``: the teacher-forced last-layer states ``[R, T, C]``.
* ``image_grids``: each image's token grid ``[B, 2]``, or ``None`` when every image has the same square grid.
* ``prefill``: embeddings, position ids and each row's next position for cached decoding; ``step_positions``:
  the position ids of one new token per row.
* ``image_side``: the vision encoder's input side (LLaVA's CLIP crop; unused by a ``full`` view).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from read.config import VLMConfig
from read.model import llava_backbone as lb
from read.model import qwen_backbone as qb
from read.model.batch import Batch
from read.model.padding import position_ids_from_mask
from read.model.qwen_tokenizer import QwenTokenizer
from read.model.tokenizer import ReadTokenizer

__all__ = ["LlavaParts", "QwenParts", "VLM_PARTS", "parts_for"]


class LlavaParts:
    """LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP once per image, square 24 x 24 grid over the centre crop."""

    kind = "llava"
    attr = "llava"
    language_model_prefix = "llava.model.language_model."
    view = "center_crop"

    def build_tokenizer(self, cfg: VLMConfig) -> ReadTokenizer:
        kwargs = dict(seg_token=cfg.seg_token, rej_token=cfg.rej_token, image_token=cfg.image_token,
                      use_im_start_end=cfg.use_im_start_end, pad_token=cfg.pad_token)
        source = cfg.tokenizer or cfg.pretrained
        if source is None:
            assert cfg.tiny is not None
            return ReadTokenizer.build_tiny(cfg.tiny.tokenizer_vocab_size, **kwargs)
        return ReadTokenizer.from_pretrained(source, **kwargs)

    def build(self, cfg: VLMConfig, tokenizer: ReadTokenizer, device: torch.device | None) -> nn.Module:
        return lb.build_llava(cfg, tokenizer, device=device)

    def hidden_states(self, vlm: nn.Module, batch: Batch) -> Tensor:
        embeds = lb.embed_inputs(vlm, batch.input_ids, batch.pixel_values_clip, batch.row_to_image)
        return lb.language_model_forward(vlm, embeds, batch.attention_mask)

    def image_grids(self, vlm: nn.Module, batch: Batch) -> Tensor | None:
        return None

    def image_side(self, vlm: nn.Module) -> int:
        return lb.clip_image_size(vlm)

    def prefill(self, vlm: nn.Module, ids: Tensor, am: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(embeds [R, T, C], position ids [R, T], next position [R])`` of left-padded prompts."""
        embeds = lb.embed_inputs(vlm, ids, batch.pixel_values_clip, batch.row_to_image)
        return embeds, position_ids_from_mask(am), am.sum(1)

    def step_positions(self, next_pos: Tensor) -> Tensor:
        return next_pos[:, None]


class QwenParts:
    """Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): dynamic-resolution grids spanning the image, 3-D RoPE."""

    kind = "qwen2_5_vl"
    attr = "qwen"
    language_model_prefix = "qwen.model.language_model."
    view = "full"

    def build_tokenizer(self, cfg: VLMConfig) -> QwenTokenizer:
        source = cfg.tokenizer or cfg.pretrained
        if source is None:
            assert cfg.tiny_qwen is not None
            return QwenTokenizer.build_tiny(cfg.tiny_qwen.tokenizer_vocab_size, seg_token=cfg.seg_token,
                                            rej_token=cfg.rej_token)
        return QwenTokenizer.from_pretrained(source, seg_token=cfg.seg_token, rej_token=cfg.rej_token)

    def build(self, cfg: VLMConfig, tokenizer: QwenTokenizer, device: torch.device | None) -> nn.Module:
        return qb.build_qwen(cfg, tokenizer, device=device)

    @staticmethod
    def _grid_thw(batch: Batch) -> Tensor:
        if batch.image_grid_thw is None:
            raise ValueError("a Qwen2.5-VL batch needs image_grid_thw (collate with the Qwen2.5-VL image processor)")
        return batch.image_grid_thw

    def hidden_states(self, vlm: nn.Module, batch: Batch) -> Tensor:
        embeds, pos, _ = self.prefill(vlm, batch.input_ids, batch.attention_mask, batch)
        return qb.language_model_forward(vlm, embeds, batch.attention_mask, pos)

    def image_grids(self, vlm: nn.Module, batch: Batch) -> Tensor:
        return qb.merged_grids(vlm, self._grid_thw(batch))

    def image_side(self, vlm: nn.Module) -> int:
        return int(vlm.config.vision_config.patch_size) * int(vlm.config.vision_config.spatial_merge_size)

    def prefill(self, vlm: nn.Module, ids: Tensor, am: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(embeds [R, T, C], 3-D position ids [3, R, T], next position [R])``."""
        thw = self._grid_thw(batch)
        embeds = qb.embed_inputs(vlm, ids, batch.pixel_values_clip, thw, batch.row_to_image)
        pos, next_pos = qb.rope_positions(vlm, ids, am, thw, batch.row_to_image)
        return embeds, pos, next_pos

    def step_positions(self, next_pos: Tensor) -> Tensor:
        return next_pos[None, :, None].expand(3, -1, 1)


VLM_PARTS = {"llava": LlavaParts(), "qwen2_5_vl": QwenParts()}


def parts_for(kind: str) -> LlavaParts | QwenParts:
    """The adapter of ``model.vlm.kind``."""
    try:
        return VLM_PARTS[kind]
    except KeyError:
        raise ValueError(f"unknown vision-language model kind {kind!r} (known: {sorted(VLM_PARTS)})") from None

