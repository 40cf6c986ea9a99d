"""The configuration schema: one dataclass per section, every field typed and documented, and the SasP presets.
Loading, overrides and validation are in ``read.config.loading``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and, where known, the file."""


@dataclass
class TinyLlavaConfig:
    """Sizes of a randomly initialised LLaVA (tests, quickstart). Vocabulary size comes from the tokenizer."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_hidden_layers: int = 2
    vision_num_attention_heads: int = 2
    image_size: int = 112
    """CLIP input side (the real model: 336)."""
    patch_size: int = 14
    tokenizer_vocab_size: int = 600
    """Size of the SentencePiece model trained in memory for the tiny tokenizer."""
    vocab_rows: int | None = None
    """Rows of ``embed_tokens``/``lm_head`` (``null``: the tokenizer's size). Larger pads them like llava-hf
    (32064 for the random full-size model of ``configs/model/read_7b_random.yaml``); padding rows are outside the
    output vocabulary."""


@dataclass
class TinyQwenConfig:
    """Sizes of a randomly initialised Qwen2.5-VL (tests, quick runs). Vocabulary size comes from the tokenizer."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    patch_size: int = 14
    spatial_merge_size: int = 2
    window_size: int = 56
    """Vision window attention side in pixels (the real model: 112)."""
    fullatt_block_indexes: list[int] = field(default_factory=lambda: [1])
    tokenizer_vocab_size: int = 600
    """Size of the byte-level BPE trained in memory for the tiny tokenizer."""
    vocab_rows: int | None = None
    tie_word_embeddings: bool = False
    """``lm_head`` shares ``embed_tokens`` (Qwen2.5-VL-3B does, 7B does not)."""


@dataclass
class VLMConfig:
    """The vision-language part: LLaVA-1.5 (``kind: llava``, transformers' ``LlavaForConditionalGeneration``, the
    official READ) or Qwen2.5-VL (``kind: qwen2_5_vl``, ``Qwen2_5_VLForConditionalGeneration``; docs/BACKBONES.md)."""

    kind: Literal["llava", "qwen2_5_vl"] = "llava"
    pretrained: str | None = "llava-hf/llava-1.5-7b-hf"
    """Hub id or local directory in llava-hf (or Qwen2.5-VL) layout. ``null`` builds a random model from ``tiny``
    (``tiny_qwen`` for Qwen2.5-VL)."""
    tokenizer: str | None = None
    """Directory holding ``tokenizer.model`` (SentencePiece; for Qwen2.5-VL its tokenizer files). Defaults to
    ``pretrained``."""
    tiny: TinyLlavaConfig | None = None
    tiny_qwen: TinyQwenConfig | None = None
    min_pixels: int = 3136
    """Qwen2.5-VL only: an image is resized to at least this many pixels (56 x 56, Qwen's default)."""
    max_pixels: int = 1003520
    """Qwen2.5-VL only: and at most this many (1280 merged tokens of 28 x 28 px, Qwen's default)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "bf16"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """``auto``: flash_attention_2 when CUDA and flash-attn are available, else sdpa."""
    use_im_start_end: bool = True
    """Official: ``<image>`` is wrapped as ``<im_start><image><im_end>`` (spec 1.2)."""
    conv_template: Literal["llava_v1", "vicuna_v1"] = "llava_v1"
    """llava_v1 is the training prompt; vicuna_v1 is what the official test/demo scripts use (spec 4.5)."""
    seg_token: str = "[SEG]"
    rej_token: str | None = None
    """GSVA's rejection token (``"[REJ]"``): one answer slot per expression, ``[SEG]`` for a target, ``[REJ]`` for an
    absent one (added right after ``[SEG]``, as GSVA's ``add_task_tokens``). ``null``: READ's vocabulary."""
    image_token: str = "<image>"
    pad_token: str = "<unk>"
    """Official: pad = unk (id 0)."""
    seg_query: Literal["before", "on"] = "before"
    """``before``: the hidden state of the token preceding [SEG] (official, spec 1.7); ``on``: [SEG] itself."""
    mean_resizing: bool = False
    """Initialisation of the ``embed_tokens``/``lm_head`` rows of tokens new to the checkpoint ([SEG], <im_start>,
    <im_end> on llava-hf, whose padded matrices already have rows there). ``false``: official (transformers 4.31
    ``resize_token_embeddings``): fresh Normal(0, initializer_range=0.02) rows; ``true``: the mean of the other rows."""
    gradient_checkpointing: bool = False
    model_max_length: int = 2048
    """Maximum length in tokens after image expansion."""


@dataclass
class TinySamConfig:
    img_size: int = 128
    patch_size: int = 16
    encoder_dim: int = 32
    encoder_depth: int = 2
    encoder_heads: int = 2
    window_size: int = 4
    prompt_dim: int = 256
    decoder_mlp_dim: int = 64


@dataclass
class TinySam2Config:
    """A random SAM 2 (Hiera backbone + FPN neck + SAM 2 decoder) built from sizes: tiny for tests and quick runs, or
    a released architecture with random weights (``configs/model/read_qwen25vl_3b_sam2_random.yaml``: Hiera-L)."""

    image_size: int = 128
    hidden_size: int = 32
    """Prompt / decoder width (``model.out_dim`` must equal it)."""
    embed_dim_per_stage: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    blocks_per_stage: list[int] = field(default_factory=lambda: [1, 1, 2, 1])
    heads_per_stage: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    window_size_per_stage: list[int] = field(default_factory=lambda: [4, 4, 4, 4])
    global_attention_blocks: list[int] = field(default_factory=lambda: [3])
    pos_embed_background: list[int] | None = None
    """Side of Hiera's background positional embedding (Hiera-L: [7, 7]); ``null``: about the square root of the
    first stage's side."""
    decoder_mlp_dim: int = 64
    decoder_heads: int = 2


@dataclass
class SamConfig:
    """The mask decoder: SAM (the unmodified ``segment_anything`` classes, ``kind: sam``) or SAM 2 (transformers'
    ``Sam2Model`` parts, ``kind: sam2``)."""

    kind: Literal["sam", "sam2"] = "sam"
    """``sam``: SAM ViT-H/L/B (official READ). ``sam2``: SAM 2 / 2.1 image prediction (docs/BACKBONES.md)."""
    variant: Literal["vit_h", "vit_l", "vit_b", "tiny"] = "vit_h"
    """SAM encoder (``kind: sam``). With ``kind: sam2`` only ``tiny`` is read (a random SAM 2 from ``tiny_sam2``);
    any other value takes the architecture from ``checkpoint``."""
    checkpoint: str | None = "sam_vit_h_4b8939.pth"
    """``kind: sam``: path to the SAM state dict (``.pth``). ``kind: sam2``: hub id or local directory of a SAM 2
    model in transformers layout (``facebook/sam2.1-hiera-large``). ``null`` leaves it randomly initialised (tests,
    or weights loaded later)."""
    tiny: TinySamConfig | None = None
    tiny_sam2: TinySam2Config | None = None
    dynamic_multimask: bool = False
    """SAM 2 only: at inference, fall back from mask token 0 to the best multimask output when token 0 is unstable
    (SAM 2's predictor default). Off: mask token 0 in training and inference alike, as READ does with SAM."""
    encoder_batch_size: int = 4
    """Images per chunk through the frozen image encoder."""
    global_attn_indexes: list[int] | None = None
    """Image-encoder blocks with global attention. ``null``: the variant's (vit_h [7, 15, 23, 31], vit_l
    [5, 11, 17, 23], vit_b [2, 5, 8, 11]; tiny: the last block)."""
    iou_head_hidden_dim: int = 256
    """Width of the mask decoder's IoU-prediction MLP (256 in every released SAM)."""
    iou_head_depth: int = 3
    num_multimask_outputs: int = 3
    """Extra mask tokens of the decoder (READ uses mask token 0 only; the weights still exist)."""


@dataclass
class LoRAConfig:
    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Linear layers of the *language model* only (never CLIP, the projector or SAM)."""


@dataclass
class SasPConfig:
    """Similarity-as-Points (spec section 2). Parameter-free: may differ between training and evaluation."""

    enabled: bool = True
    """False: text-only prompting (LISA/SESAME behaviour)."""
    preset: str | None = None
    """Named preset from ``SASP_PRESETS`` (below), expanded by ``load_config``; keys given explicitly win."""
    variant: Literal["official", "paper"] = "official"
    num_points: int = 30
    t_pos: float = 0.8
    t_neg: float = 0.2
    down_sample: int = 2
    continuous: bool = True
    """Discrete-to-Continuous refinement."""
    eps: float = 0.5
    """Paper variant only: thresholds mean +- eps * std."""
    dtoc_window: int = 4
    """Half-width in pixels of the local DtoC window (weights beyond it underflow in fp32)."""


@dataclass
class ModelConfig:
    name: str = "read_7b"
    vlm: VLMConfig = field(default_factory=VLMConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    sasp: SasPConfig = field(default_factory=SasPConfig)
    out_dim: int = 256
    """Output of the [SEG] projection MLP (H -> H -> out_dim); SAM's prompt dimension."""
    seg_prompt: bool = True
    """False: SAM is prompted by the SasP points only, without the [SEG] embedding (ablation, paper Table 6)."""
    trainable: list[str] = field(
        default_factory=lambda: ["lm_head", "embed_tokens", "mask_decoder", "text_hidden_fcs"]
    )
    """Modules trained in full besides LoRA (official ``init_READ_model``, spec 1.6)."""


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    ignore_mode: Literal["background", "mask"] = "background"
    """Pixels labelled 255: ``background`` = official (counted as 0); ``mask`` = excluded from BCE and Dice."""


# Official dataset keys of the training mixture (train_read.py --dataset, spec 3.6).
MIXTURE_KEYS = ("sem_seg", "refer_seg", "neg_refer_seg", "correct_refer_seg", "vqa", "reason_seg")


@dataclass
class DataConfig:
    """Datasets under one root, in the official on-disk layout (docs/DATA.md)."""

    root: str | None = None
    """Data root. ``null``: ``$READ_DATA_ROOT`` if set, else ``./dataset``."""
    style: Literal["read", "gsva"] = "read"
    """How training samples are phrased. ``read``: the official READ/SESAME datasets (one expression or class per
    row, false premises). ``gsva``: GSVA's (``data/refer_seg_dataset.py``, ``sem_seg_dataset.py``): up to
    ``num_classes_per_sample`` expressions or classes in one question, answered slot by slot with ``[SEG]`` for a
    target and ``[REJ]`` for an absent one (needs ``model.vlm.rej_token``); gRefCOCO (``grefcoco`` in
    ``refer_seg_data``) is read in this style."""
    datasets: list[str] = field(
        default_factory=lambda: ["sem_seg", "refer_seg", "correct_refer_seg", "vqa", "neg_refer_seg", "reason_seg"]
    )
    """Mixture components (official ``--dataset`` split on ``||``)."""
    sample_rates: list[float] = field(default_factory=lambda: [10.0, 1.0, 1.0, 1.0, 1.0, 10.0])
    sem_seg_data: list[str] = field(
        default_factory=lambda: ["ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"]
    )
    refer_seg_data: list[str] = field(default_factory=lambda: ["refclef", "refcoco", "refcoco+", "refcocog"])
    neg_refer_seg_data: list[str] = field(default_factory=lambda: ["R-refcocog", "R-refcoco", "R-refcoco+"])
    correct_refer_seg_data: list[str] = field(default_factory=lambda: ["fprefcocog", "fprefcoco", "fprefcoco+"])
    reason_seg_split: str = "train"
    generate_synthetic: bool = False
    """Write the synthetic datasets under ``root`` first when they are missing (quickstart, tests)."""
    num_classes_per_sample: int = 3
    samples_per_epoch: int | None = None
    """``null``: batch_size x grad_accumulation x steps_per_epoch x world_size (official)."""
    on_error: Literal["raise", "skip"] = "raise"
    """A bad sample (corrupt image, malformed annotation): stop with the file named, or skip and count it."""
    workers: int = 2


@dataclass
class TrainConfig:
    """Optimisation and run control. The DeepSpeed JSON is generated from these fields (one source of truth)."""

    engine: Literal["auto", "deepspeed", "torch"] = "auto"
    """``auto``: DeepSpeed when CUDA is available, else the plain PyTorch engine (CPU, tests)."""
    epochs: int = 20
    steps_per_epoch: int = 500
    """Optimiser steps per epoch (official ``--steps_per_epoch``)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps in total (the lr schedule still spans epochs x steps_per_epoch)."""
    max_minutes: float | None = None
    """Stop after this much training time (evaluation time excluded): a fixed compute budget."""
    eval_every: int | None = None
    """Every N optimiser steps, evaluate on ``eval.*`` (first ``eval_limit`` items) and log val gIoU/cIoU."""
    eval_limit: int | None = 100
    batch_size: int = 2
    """Images per micro-batch per device (``train_micro_batch_size_per_gpu``)."""
    grad_accumulation_steps: int = 10
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0
    optimizer: Literal["auto", "adamw", "adamw_fused", "deepspeed_fused_adam"] = "auto"
    """AdamW implementation (same update rule). ``auto`` (default): ``adamw_fused`` on CUDA, ``adamw`` elsewhere;
    ``adamw``: ``torch.optim.AdamW`` (no compiler needed); ``adamw_fused``: its fused kernel (``fused=True``, one
    kernel for all parameters instead of a loop of small ones; CUDA or CPU); ``deepspeed_fused_adam``: DeepSpeed's
    FusedAdam (what the official run used), JIT-compiled with nvcc on first use, CUDA only, needs a CUDA toolkit
    matching torch's."""
    warmup_steps: int = 100
    """Linear warm-up from 0 (DeepSpeed WarmupDecayLR), then linear decay to 0 at epochs x steps_per_epoch."""
    grad_clip: float = 1.0
    zero_stage: int = 2
    deepspeed_config: str | None = "configs/deepspeed/zero2.json"
    """ZeRO knobs only (bucket sizes, overlap); batch, lr, optimiser and precision are injected from this YAML."""
    save_every: int = 500
    """Checkpoint every N optimiser steps (and at the end)."""
    keep_last: int = 2
    auto_resume: bool = True
    """Continue from the latest complete checkpoint in ``output_dir`` with the same data order and step."""
    max_nonfinite: int = 10
    """Stop after this many consecutive micro-batches with a non-finite loss."""
    log_every: int = 1
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    """Any of ``jsonl`` (always written), ``tensorboard``, ``wandb``."""
    progress: bool = True
    seed: int = 42
    init: Literal["llava", "released", "checkpoint"] = "llava"
    """``llava``: LLaVA weights + SAM from its .pth + fresh projection; ``released``: an official SESAME/READ
    merged folder (``init_checkpoint``); ``checkpoint``: trainable weights from one of our checkpoints."""
    init_checkpoint: str | None = None
    keep_best: Literal["ciou", "giou"] | None = None
    """Keep the checkpoint with the best validation metric (``eval.*`` every ``train.eval_every`` steps, on the
    first ``train.eval_limit`` items) in ``checkpoints/best``, besides the last ``keep_last``. Official
    ``train_read.py``: validate every epoch, keep the best cIoU (how the released checkpoints were chosen)."""


EVAL_DATASETS = ("reason_seg", "refclef", "refcoco", "refcoco+", "refcocog", "fprefcoco", "fprefcoco+", "fprefcocog",
                 "R-refcoco", "R-refcoco+", "R-refcocog", "grefcoco")


@dataclass
class EvalConfig:
    """Evaluation protocol, dataset and decoding (spec 5)."""

    protocol: Literal["teacher_forced", "generate", "fp_refcoco"] = "teacher_forced"
    """``teacher_forced``: the official ReasonSeg/refCOCO validation (the answer with [SEG] is given);
    ``generate``: real inference (greedy, KV cache; the model must emit [SEG]); ``fp_refcoco``: See / Segment."""
    dataset: str = "reason_seg"
    split: str = "val"
    subset: Literal["all", "short", "long"] = "all"
    """ReasonSeg only: all queries, or short / long (``is_sentence``) ones."""
    batch_size: int = 4
    """Images per batch."""
    max_new_tokens: int = 64
    template_seed: int = 42
    """refCOCO-family question/answer templates are drawn from (template_seed, image id, sentence index)."""
    conv_template: Literal["llava_v1", "vicuna_v1"] | None = None
    """``null``: the training prompt (model.vlm.conv_template). ``vicuna_v1``: the official test/demo prompt."""
    multi_seg: Literal["first", "union"] = "first"
    """A generated answer with several [SEG]: score the first mask (official) or their union."""
    rej_rule: Literal["reeval", "empty"] = "reeval"
    """gRefCOCO, teacher forced: how a slot the model rejects is scored. ``reeval`` (official GSVA code,
    ``modeling_lisa_gsva.py``): the [SEG]/[REJ] decision is read from the model's argmax at each slot, then every
    slot is re-run as [SEG] and scored with its mask; ``empty`` (the paper, 3.4, and ReLA's evaluator): a rejected
    slot's mask is empty."""
    weights: str | None = None
    """Run directory, checkpoint directory, converted model directory or an official released folder."""
    output_dir: str | None = None
    """``null``: ``<output_dir>/eval/<dataset>_<split>_<protocol>``."""
    overlays: int = 0
    """Write overlay PNGs (mask, points, similarity heat-map) of the first N samples."""
    limit: int | None = None
    after_train: bool = False
    """Evaluate at the end of ``train.py`` (the quickstart does)."""


@dataclass
class ReadConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    device: str = "auto"
    """``auto``: cuda if available, else cpu."""


# Per-release SasP settings (spec 2.10). A config selects one with ``model.sasp.preset``; keys given explicitly
# next to the preset (in the same file, a child file or on the command line) win over the preset's values.
SASP_PRESETS: dict[str, dict[str, Any]] = {
    # READ-7B releases (ReasonSeg val/test, fprefcoco); also the 7B training setting.
    "read_7b": {"num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 2},
    # READ-13B evaluation (the commented lines the official README asks users to uncomment).
    "read_13b_eval": {"num_points": 60, "t_pos": 0.6, "t_neg": 0.2, "down_sample": 1},
    # READ-13B training stage 1 (README): 10 points, down_sample 1.
    "read_13b_stage1": {"num_points": 10, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 1},
    # READ-13B stage 2 (README says num_points 30 only; thresholds and down_sample assumed unchanged from stage 1).
    "read_13b_stage2": {"num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 1},
}
