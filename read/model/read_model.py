"""READ: a vision-language model emits [SEG]; its state (projected) and SasP point prompts drive a mask decoder.

The official pairing is LLaVA-1.5 + SAM; the vision-language part is reached only through its adapter
(``read.model.vlm_parts``: LLaVA-1.5 or Qwen2.5-VL) and the mask decoder only through the head's methods
(``SamMaskHead`` or ``Sam2MaskHead``), so any pairing runs the same code. ``ReadModel`` only orchestrates; each step
lives in its own module:

1. the adapter's ``hidden_states`` (``llava_backbone.embed_inputs`` + ``language_model_forward`` for LLaVA):
   last-layer states ``[R, T, C]``.
2. ``tokens.seg_query_positions``: one query per [SEG] (the state *before* [SEG], spec 1.7).
3. ``tokens.gather_image_states``: the image-token states of each query's row ``[P, N, C]``.
4. ``point_prompter`` (SasP, optional): points ``[P, K, 2]`` in the SAM frame, labels ``[P, K]``.
5. ``SegProjector``: ``[P, C] -> [P, 256]``.
6. ``SamMaskHead``: frozen encoder once per image, prompts ``[points | pad | [SEG]]``, mask decoder,
   masks at each image's original size.
7. ``losses``: CE + weighted BCE + weighted Dice (spec 3.4).

Fixes of official bugs (spec section 10), each by construction here:
* 10.1/10.2: every [SEG] gets its own point set, and the image size is looked up through the query's own image
  (``row_to_image[row]``), not through its position among single-[SEG] rows.
* 10.3/10.9: image-token positions come from the ids of each row, never from a hard-coded ``<im_start>`` id or
  from the first row of the batch.
* 10.10: no batch-of-one assumption anywhere.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from read.config import LossConfig
from read.model import llava_backbone as lb
from read.model.batch import Batch
from read.model.losses import aggregate_mask_losses
from read.model.outputs import LossOutput, ReadOutput, SegQueries
from read.model.projector import SegProjector
from read.model.tokens import query_image_states, seg_query_positions
from read.model.vlm_parts import parts_for


class PointPrompter(Protocol):
    """Turns similarity between [SEG] and image-token states into SAM point prompts (parameter-free)."""

    def __call__(self, image_hidden: Tensor, seg_hidden: Tensor, image_hw: Tensor, grid_hw: Tensor | None = None):
        """``[P, N, C], [P, C], [P, 2] (, [P, 2] token grids) -> obj`` with ``coords [P, K, 2]`` (decoder frame) and
        ``labels [P, K]``."""
        ...


class MaskHead(Protocol):
    """What READ needs from a mask decoder (``SamMaskHead``, ``Sam2MaskHead``)."""

    frame: str  # input frame (read.model.sasp_geometry.FRAMES)
    img_size: int  # input side S
    prompt_dim: int

    def encode_images(self, pixel_values: Tensor) -> object:
        """Frozen image encoder on ``[B, 3, S, S]``; the result is passed back to ``__call__`` unchanged."""
        ...

    def __call__(self, image_embeddings: object, seg_embeddings: Tensor, query_image: Tensor, sam_input_hw: Tensor,
                 image_hw: Tensor, coords: Tensor | None = None, labels: Tensor | None = None) -> list[Tensor]:
        """Per image ``[n_b, H_b, W_b]`` fp32 mask logits at the original size."""
        ...


class ReadModel(nn.Module):
    """The READ model. Submodules are given, not built (see ``read.model.builder.build_read_model``).

    Args:
        llava: transformers ``LlavaForConditionalGeneration`` (LoRA may be injected into it); or
        vlm, vlm_kind: any vision-language model with its kind (``read.model.vlm_parts.VLM_PARTS``), registered under
            the adapter's ``attr`` (``llava``, ``qwen``) so parameter names keep their family's prefix.
        sam: the mask head (:class:`MaskHead`: SAM or SAM 2).
        text_hidden_fcs: the [SEG] projection.
        seg_token_id, image_token_id: token ids from the tokenizer.
        loss_cfg: loss weights and ignore-pixel handling.
        point_prompter: SasP (or any :class:`PointPrompter`); ``None`` = text-only prompting (LISA/SESAME).
        seg_query: ``before`` (official) or ``on``.
        output_vocab: ``[V]`` bool, the official output vocabulary inside ``lm_head``
            (:func:`read.model.llava_backbone.output_vocab_mask`); the language loss, the returned logits and greedy
            decoding never give probability to other rows. ``None``: every row (only for models without padding
            rows). Kept as a non-persistent buffer (it is derived from the tokenizer, never loaded).
    """

    def __init__(
        self,
        *,
        llava: nn.Module | None = None,
        sam: nn.Module,
        text_hidden_fcs: SegProjector,
        seg_token_id: int,
        image_token_id: int,
        loss_cfg: LossConfig | None = None,
        point_prompter: PointPrompter | None = None,
        seg_query: str = "before",
        output_vocab: Tensor | None = None,
        vlm: nn.Module | None = None,
        vlm_kind: str = "llava",
    ) -> None:
        super().__init__()
        if (llava is None) == (vlm is None):
            raise ValueError("give exactly one of llava= and vlm=")
        self.parts = parts_for("llava" if llava is not None else vlm_kind)
        setattr(self, self.parts.attr, llava if llava is not None else vlm)
        self.sam = sam
        self.text_hidden_fcs = text_hidden_fcs
        self.seg_token_id = seg_token_id
        self.image_token_id = image_token_id
        self.loss_cfg = loss_cfg or LossConfig()
        self.point_prompter = point_prompter
        self.seg_query = seg_query
        self.register_buffer("output_vocab", output_vocab, persistent=False)

    # ---------------------------------------------------------------------------------------------------------
    @property
    def vlm(self) -> nn.Module:
        """The transformers vision-language model (``self.llava`` or ``self.qwen``)."""
        return getattr(self, self.parts.attr)

    def hidden_states(self, batch: Batch) -> Tensor:
        """Last-layer, post-norm language-model states ``[R, T, C]``."""
        return self.parts.hidden_states(self.vlm, batch)

    def find_queries(self, batch: Batch) -> SegQueries:
        """Positions of the [SEG] query states, row-major, with the image of each."""
        rows, cols = seg_query_positions(batch.input_ids, self.seg_token_id, self.seg_query)
        return SegQueries(rows=rows, cols=cols, image=batch.row_to_image[rows])

    def segment(
        self,
        hidden: Tensor,
        input_ids: Tensor,
        queries: SegQueries,
        pixel_values_sam: Tensor,
        image_hw: Tensor,
        sam_input_hw: Tensor,
        image_grids: Tensor | None = None,
    ) -> tuple[list[Tensor], object | None]:
        """Masks for the given queries (shared by training and inference).

        The frozen SAM image encoder runs only on the images that have a query (official: every image of the
        batch, spec 10 / issue "the SAM encoder runs on images that have no [SEG]").

        Args:
            hidden: ``[R, T, C]``; input_ids: ``[R, T]``; queries: P queries.
            pixel_values_sam: ``[B, 3, S, S]``; image_hw, sam_input_hw: ``[B, 2]``.
            image_grids: ``[B, 2]`` token grid of each image (dynamic-resolution VLMs), ``None``: square grids.

        Returns:
            (per-image ``[n_b, H_b, W_b]`` fp32 logits (``n_b = 0`` for an image without query), point prompts or
            ``None``).
        """
        seg_hidden = hidden[queries.rows, queries.cols]  # [P, C]
        image_hidden = None
        if self.point_prompter is not None and queries.rows.numel() > 0:
            image_hidden = query_image_states(hidden, input_ids, queries.rows, self.image_token_id,
                                              per_image_grids=image_grids is not None)
        grid_hw = None if image_grids is None else image_grids[queries.image]
        per_used, used, _, points = self.segment_states(
            seg_hidden, image_hidden, queries.image, pixel_values_sam, image_hw, sam_input_hw, grid_hw=grid_hw
        )
        slot = {int(b): k for k, b in enumerate(used.tolist())}
        masks = []
        for b in range(pixel_values_sam.shape[0]):
            if b in slot:
                masks.append(per_used[slot[b]])
            else:
                h, w = (int(v) for v in image_hw[b])
                masks.append(hidden.new_zeros(0, h, w, dtype=torch.float32))
        return masks, points

    def segment_states(
        self,
        seg_hidden: Tensor,
        image_hidden: Tensor | None,
        query_image: Tensor,
        pixel_values_sam: Tensor,
        image_hw: Tensor,
        sam_input_hw: Tensor,
        image_embeddings: object | None = None,
        grid_hw: Tensor | None = None,
    ) -> tuple[list[Tensor], Tensor, Tensor, object | None]:
        """SasP, the [SEG] projection and SAM for P query states, the SAM encoder run once per image with a query.

        Args:
            seg_hidden: ``[P, C]``; image_hidden: ``[P, N, C]`` image-token states of each query's row (used only
                with a point prompter, required then when P > 0); query_image: ``[P]`` image index of each query.
            pixel_values_sam: ``[B, 3, S, S]``; image_hw, sam_input_hw: ``[B, 2]``.
            image_embeddings: the mask head's ``encode_images`` of the ``used`` images, when the caller already has
                them (analysis tools); ``None``: encoded here.
            grid_hw: ``[P, 2]`` token grid of each query's image (dynamic-resolution VLMs; ``image_hidden`` then padded
                to the largest grid), ``None``: square grids.

        Returns:
            (per used image ``[n_u, H_u, W_u]`` fp32 logits of its queries in query order, ``used`` ``[U]`` the
            sorted image indices with a query, ``local`` ``[P]`` each query's position in ``used``, point prompts
            or ``None``). With P = 0 nothing runs and the list is empty.
        """
        used, local = torch.unique(query_image, sorted=True, return_inverse=True)
        if seg_hidden.shape[0] == 0:
            return [], used, local, None
        points = None
        coords = labels = None
        if self.point_prompter is not None:
            if image_hidden is None:
                raise ValueError("SasP needs the image-token states of every query row (rows without image tokens?)")
            if grid_hw is None:
                points = self.point_prompter(image_hidden, seg_hidden, image_hw[query_image])
            else:
                points = self.point_prompter(image_hidden, seg_hidden, image_hw[query_image], grid_hw)
            coords, labels = points.coords, points.labels
        if image_embeddings is None:
            image_embeddings = self.sam.encode_images(pixel_values_sam[used])
        per_used = self.sam(
            image_embeddings,
            self.text_hidden_fcs(seg_hidden),  # [P, D]
            local,
            sam_input_hw[used],
            image_hw[used],
            coords=coords,
            labels=labels,
        )
        return per_used, used, local, points

    def idle_module_term(self, hidden: Tensor, batch: Batch) -> Tensor:
        """A term of value 0 whose graph runs the [SEG] projection, SasP and the SAM mask decoder on one dummy query
        (the state at row 0, position 0, on that row's image).

        Added to the loss of a micro-batch without any [SEG] (VQA rows, false premises): under ZeRO-2 every
        trainable parameter must receive a gradient in every backward pass, in the same order on every rank, or the
        bucketed gradient reduction fails or mixes parameters. Running the same code path as real queries keeps
        the order identical. Returns a 0-dim fp32 tensor.
        """
        dummy = SegQueries(rows=hidden.new_zeros(1, dtype=torch.long), cols=hidden.new_zeros(1, dtype=torch.long),
                           image=batch.row_to_image[:1])
        masks, _ = self.segment(hidden, batch.input_ids, dummy, batch.pixel_values_sam, batch.image_hw,
                                batch.sam_input_hw, self.parts.image_grids(self.vlm, batch))
        return sum(m.sum() for m in masks) * 0.0

    def compute_loss(self, hidden: Tensor, labels: Tensor, pred_masks: list[Tensor], gt_masks: list[Tensor]) -> LossOutput:
        """Weighted CE + BCE + Dice (spec 3.4)."""
        cfg = self.loss_cfg
        ce = lb.causal_lm_loss(self.vlm, hidden, labels, self.output_vocab)
        bce, dice, n = aggregate_mask_losses(pred_masks, gt_masks, ignore_mode=cfg.ignore_mode)
        bce, dice = bce.to(ce.device), dice.to(ce.device)
        ce_w, bce_w, dice_w = cfg.ce_weight * ce, cfg.bce_weight * bce, cfg.dice_weight * dice
        return LossOutput(total=ce_w + bce_w + dice_w, ce=ce_w, bce=bce_w, dice=dice_w, num_masks=n)

    def forward(self, batch: Batch, *, return_logits: bool = False) -> ReadOutput:
        """Teacher-forced forward: masks for every [SEG] in ``input_ids``; losses when labels and masks are given."""
        hidden = self.hidden_states(batch)
        queries = self.find_queries(batch)
        if batch.gt_masks is not None:
            for b, gt in enumerate(batch.gt_masks):
                n_q = int((queries.image == b).sum())
                if gt.shape[0] != n_q:
                    raise ValueError(f"image {b} has {n_q} [SEG] queries but {gt.shape[0]} ground-truth masks")
        pred_masks, points = self.segment(
            hidden, batch.input_ids, queries, batch.pixel_values_sam, batch.image_hw, batch.sam_input_hw,
            self.parts.image_grids(self.vlm, batch),
        )
        loss = None
        if batch.labels is not None and batch.gt_masks is not None:
            loss = self.compute_loss(hidden, batch.labels, pred_masks, batch.gt_masks)
            if queries.rows.numel() == 0 and torch.is_grad_enabled():
                loss.total = loss.total + self.idle_module_term(hidden, batch)
        logits = lb.lm_logits(self.vlm, hidden, self.output_vocab) if return_logits else None
        return ReadOutput(loss=loss, pred_masks=pred_masks, queries=queries, points=points, logits=logits)

    # ---------------------------------------------------------------------------------------------------------
    def trainable_parameter_names(self) -> list[str]:
        """Sorted names of parameters with ``requires_grad``."""
        return sorted(n for n, p in self.named_parameters() if p.requires_grad)

    @torch.no_grad()
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
