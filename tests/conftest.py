"""Shared fixtures: environment for CPU runs, the tiny config and a tiny READ model with a batch."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "model" / "tiny.yaml"

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    # An in-process DeepSpeed engine starts a process group (and sets RANK/WORLD_SIZE/MASTER_* in os.environ) that
    # cannot be torn down without breaking DeepSpeed's own caches: such tests run last, after the tests that need
    # a single-process world (stable sort keeps the file order otherwise).
    items.sort(key=lambda item: "process_group" in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cfg():
    from read.config import load_config

    return load_config(TINY)


def make_tiny_batch(model, tokenizer, cfg, seed: int = 0, n_images: int = 2):
    from read.data.base import Sample
    from read.data.collate import collate
    from read.data.synthetic import draw_rectangles
    from read.model.llava_backbone import clip_image_size, num_image_tokens

    rng = np.random.default_rng(seed)
    samples = []
    sizes = [(60, 80), (90, 50), (70, 70), (40, 100)]
    for i in range(n_images):
        h, w = sizes[i % len(sizes)]
        image, masks, names = draw_rectangles(rng, h, w, num_shapes=2)
        q = "<image>\nWhat is {} in this image? Please output segmentation mask."
        convs = [[(q.format(n), "Sure, the segmentation result is [SEG].")] for n in names]
        m = np.stack(masks)
        m[:, 0, :3] = 255  # a few ignore pixels
        samples.append(Sample(image=image, conversations=convs, masks=m))
    return collate(
        samples,
        tokenizer,
        num_image_tokens=num_image_tokens(model.llava),
        clip_size=clip_image_size(model.llava),
        sam_size=model.sam.img_size,
        sam_frame=model.sam.frame,
        use_im_start_end=cfg.model.vlm.use_im_start_end,
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    from read.model.builder import build_read_model

    torch.manual_seed(0)
    model, tok = build_read_model(tiny_cfg)
    return model, tok


def train_llama_sp_model(corpus: list[str], vocab_size: int) -> bytes:
    """A LLaMA-style SentencePiece model (BPE, byte fallback, dummy prefix, identity normalisation) trained by the
    tests themselves, independently of ``read.model.tokenizer``; returns the serialized model."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
    )
    return buf.getvalue()
