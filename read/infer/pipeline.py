"""Run a READ model on your own image and question in three lines::

    from read import ReadPipeline
    pipe = ReadPipeline.from_pretrained("runs/quickstart")            # a run, a merged model or a release folder
    pred = pipe.predict("photo.jpg", "What can hold water? Please output segmentation mask.")
    pred.text, pred.masks, pred.similarity[0].image, pred.points[0], pred.labels[0]
    pred.save("out.png")                                               # mask, SasP points, heat-map, legend

The model is rebuilt exactly as evaluation rebuilds it (:func:`read.model.rebuild.rebuild`: config + ``train.init`` +
weights, strict loading, the frozen base checked against the checkpoint's record), and answers are generated exactly
as the ``generate`` evaluation protocol generates them (greedy, KV cache, batched with left padding, the official
output vocabulary; masks from the [SEG] state at the step that emits it), so a prediction here equals the one
``evaluate.py eval.protocol=generate`` scores for the same image and question.

Prompt: the question becomes the user turn ``"<image>\\n" + question`` (``<image>`` is added in front unless the
question already holds it, as the official ``demo.py`` does), wrapped in ``<im_start>/<im_end>`` when the model
uses them, in the conversation template of evaluation: ``eval.conv_template`` when the config sets it, else the
training template ``model.vlm.conv_template`` (``llava_v1`` for every recipe here). The official demo used
``vicuna_v1`` (spec 4.5); pass ``conv_template="vicuna_v1"`` to reproduce it. The prompt ends with ``ASSISTANT:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from read.config import ReadConfig
from read.data.base import Sample
from read.data.transforms import clip_view_box
from read.eval.loader import EvalCollator
from read.infer.images import as_rgb
from read.infer.loading import resolve_model
from read.infer.prediction import Prediction, SimilarityMap
from read.model.generate import greedy_generate, left_pad, segment_generated_detail
from read.model.sasp import dense_similarity_map, token_side

__all__ = ["ReadPipeline"]


class ReadPipeline:
    """A loaded model ready to answer questions about images (see the module docstring).

    Args:
        model: a :class:`read.model.read_model.ReadModel` (put in ``eval()`` mode here).
        tokenizer: its :class:`read.model.tokenizer.ReadTokenizer`.
        cfg: the config it was built from.
        device: where it runs (the model must already be there).
        conv_template: ``None``: evaluation's template (module docstring).
    """

    def __init__(self, model, tokenizer, cfg: ReadConfig, device: torch.device | str, *,
                 conv_template: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = next(model.vlm.parameters()).dtype
        self.conv_template = conv_template or cfg.eval.conv_template or cfg.model.vlm.conv_template
        self.collator = EvalCollator.for_model(tokenizer, model, cfg, self.conv_template)
        self.clip_size = model.parts.image_side(model.vlm)
        self.view = model.parts.view  # how the VLM's token grid covers the image (heat-maps)
        self.max_new_tokens = int(cfg.eval.max_new_tokens)
        self.weights: Path | None = None
        self.digest: str | None = None  # digest of every weight (read.model.fingerprint), set by from_pretrained

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        config: str | Path | ReadConfig | None = None,
        overrides: Sequence[str] = (),
        quantize=None,  # noqa: ANN001 - "8bit" | "4bit" | transformers.BitsAndBytesConfig
        conv_template: str | None = None,
    ) -> ReadPipeline:
        """Load a model (``read.infer.loading``) with strict checks.

        Args:
            path: a run directory (its latest checkpoint), a checkpoint folder, a merged model folder
                (``scripts/merge_lora.py``), an official release folder, or a YAML config (``configs/model/tiny.yaml``
                runs the tiny random model without any weights).
            device: ``None``: CUDA when available, else the CPU.
            dtype: ``"bf16"``, ``"fp16"``, ``"fp32"`` or a torch dtype to cast the weights to after loading
                (SAM's fp32 parts stay fp32); ``None``: the config's ``model.vlm.dtype``.
            config: a config to use instead of the one found next to ``path`` (e.g. for a LISA/SESAME release).
            overrides: ``key=value`` config overrides (``model.sasp.preset=read_13b_eval``).
            quantize: ``"8bit"`` / ``"4bit"`` / a ``BitsAndBytesConfig``: the language model's decoder layers in
                bitsandbytes layers (CUDA only); CLIP, projector, SAM and the [SEG] projection stay floating point.

        Raises:
            FileNotFoundError, read.utils.weights.CheckpointKeyError, read.model.fingerprint.BaseMismatchError,
            ValueError: with a one-line message naming the path, key or value.
        """
        from read.model.builder import cast_parameters
        from read.model.quantize import require_cuda
        from read.model.rebuild import check_paths, rebuild
        from read.utils.device import resolve_device, resolve_dtype

        dev = torch.device(device) if device is not None else resolve_device("auto", 0)
        if quantize is not None:
            require_cuda(quantize, dev)  # before minutes of loading
        cfg, weights = resolve_model(path, config, overrides)
        check_paths(cfg, weights, weights_key=str(path))
        built = rebuild(cfg, weights, dev)
        model = built.model.eval()
        if dtype is not None:
            cast_parameters(model, dtype if isinstance(dtype, torch.dtype) else resolve_dtype(str(dtype)))
        if quantize is not None:
            from read.model.quantize import quantize_language_model

            quantize_language_model(model, quantize, dev)
        pipe = cls(model, built.tokenizer, cfg, dev, conv_template=conv_template)
        pipe.weights = built.weights
        pipe.digest = built.digest
        return pipe

    # ---------------------------------------------------------------------------------------------------------
    @staticmethod
    def question(prompt: str) -> str:
        """The user turn for ``prompt``: ``"<image>\\n" + prompt`` unless it already holds ``<image>``."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"the prompt must be a non-empty string, got {prompt!r}")
        return prompt if "<image>" in prompt else "<image>\n" + prompt

    def predict(self, image, prompt: str, *, max_new_tokens: int | None = None) -> Prediction:  # noqa: ANN001
        """Answer ``prompt`` about ``image`` (a path, a PIL image or an RGB numpy array); see :class:`Prediction`.

        ``max_new_tokens``: default ``eval.max_new_tokens`` of the config (64)."""
        return self.predict_batch([image], [prompt], max_new_tokens=max_new_tokens)[0]

    @torch.no_grad()
    def predict_batch(self, images: Sequence, prompts: Sequence[str], *,
                      max_new_tokens: int | None = None) -> list[Prediction]:
        """:meth:`predict` for several (image, prompt) pairs at once, one generation batch (left padding, KV cache);
        the results equal those of one-by-one calls (``tests/test_pipeline.py``)."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        loaded = [as_rgb(im) for im in images]
        samples = [Sample(image=a, conversations=[[(self.question(p), None)]], name=n)
                   for (a, n), p in zip(loaded, prompts, strict=True)]
        batch = self.collator(samples).to(self.device, dtype=self.dtype)
        lb = left_pad(batch, self.tokenizer.pad_id)
        gen = greedy_generate(self.model, lb, max_new_tokens=int(max_new_tokens or self.max_new_tokens),
                              eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id)
        seg = segment_generated_detail(self.model, lb, gen)
        out = []
        seg_rows = gen.seg_rows.tolist()
        for r, ((img, name), prompt) in enumerate(zip(loaded, prompts, strict=True)):
            h, w = img.shape[:2]
            queries = [q for q, row in enumerate(seg_rows) if row == r]
            masks = (torch.stack([m > 0 for m in seg.masks[r]]).cpu().numpy() if seg.masks[r]
                     else np.zeros((0, h, w), bool))
            sims, points, labels = [], [], []
            for q in queries:
                if seg.similarity is not None:
                    sim = seg.similarity[q].detach().float().cpu()
                    if gen.image_grids is None:  # one square grid (LLaVA)
                        gh = gw = token_side(sim.numel())
                        grid = None
                    else:  # this row's own grid (dynamic resolution); the rest of the row is padding
                        gh, gw = (int(v) for v in gen.image_grids[int(lb.row_to_image[r])])
                        sim, grid = sim[: gh * gw], (gh, gw)
                    heat = dense_similarity_map(sim, (h, w), self.clip_size, grid_hw=grid, view=self.view)
                    sims.append(SimilarityMap(grid=sim.reshape(gh, gw).numpy(), image=heat.numpy()))
                if seg.points is not None:
                    valid = seg.points.valid[q].cpu()
                    points.append(seg.points.coords_image[q].float().cpu()[valid].numpy())
                    labels.append(seg.points.labels[q].cpu()[valid].numpy().astype(np.int64))
                else:
                    points.append(np.zeros((0, 2), np.float32))
                    labels.append(np.zeros((0,), np.int64))
            out.append(Prediction(
                text=self.tokenizer.decode(gen.new_tokens[r], skip_special_tokens=True),
                masks=masks, similarity=sims, points=points, labels=labels, image=img, prompt=prompt,
                view_box=clip_view_box(h, w, self.clip_size) if self.view == "center_crop" else None,  # full: all seen
                name=name,
            ))
        return out
