"""What :class:`read.infer.ReadPipeline` returns for one image and prompt, and its picture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from read.utils.render import render_figure, write_png

__all__ = ["Prediction", "SimilarityMap"]


@dataclass
class SimilarityMap:
    """The similarity between one [SEG] state and the image-token states of the language model's last layer.

    Attributes:
        grid: ``[s, s]`` float32 raw dot products on the token grid (24 x 24 for LLaVA-1.5 at 336 px), row-major
            over the CLIP view (the centre square of the image, ``Prediction.view_box``).
        image: ``[H, W]`` float32 in [0, 1]: the official dense map at the image's size (min-max normalised grid,
            resized to the CLIP view, zero-padded to the image's aspect, resized to ``H x W``; READ's
            ``origin_sm``, ``read.model.sasp.dense_similarity_map``). Outside the CLIP view it is 0.
    """

    grid: np.ndarray
    image: np.ndarray


@dataclass
class Prediction:
    """One answer. ``n`` = the number of [SEG] tokens the model emitted, ``H x W`` the image's original size.

    Attributes:
        text: the generated answer (special tokens removed, as the official scripts decode it).
        masks: ``[n, H, W]`` bool, one mask per [SEG] in emission order (``n = 0``: no [SEG], nothing segmented).
        similarity: ``n`` :class:`SimilarityMap` (empty when the model has no image-token states to compare).
        points: ``n`` arrays ``[K_i, 2]`` float32 (x, y) of the SasP prompts in image pixels (``K_i = 0`` when
            SasP is off); labels: ``n`` arrays ``[K_i]`` int64, 1 positive, 0 negative, -1 neutral.
        image: the RGB uint8 ``[H, W, 3]`` image that was segmented; prompt: the user's question as given.
        view_box: ``(x0, y0, x1, y1)`` in image pixels: the part of the image CLIP sees (the similarity's frame);
            ``None`` when the vision encoder sees the whole image (Qwen2.5-VL).
        name: the image's name (its path, or ``<array>`` / ``<PIL image>``).
    """

    text: str
    masks: np.ndarray
    similarity: list[SimilarityMap]
    points: list[np.ndarray]
    labels: list[np.ndarray]
    image: np.ndarray = field(repr=False)
    prompt: str = ""
    view_box: tuple[float, float, float, float] | None = (0.0, 0.0, 0.0, 0.0)
    name: str = ""

    @property
    def has_seg(self) -> bool:
        """Whether the model emitted at least one [SEG]."""
        return self.masks.shape[0] > 0

    def render(self, *, gt: np.ndarray | None = None, show_points: bool = True, query: int = 0,
               lines: list[str] | None = None, panels: str = "both", titled: bool = True) -> np.ndarray:
        """The demo picture (``read.utils.render``): every mask filled, [SEG] ``query``'s points and heat-map, the
        prompt as the title and the answer under it. ``gt``: optional ``[H, W]`` or ``[n, H, W]`` ground truth to
        outline; ``panels``: ``both``, ``left`` (image, masks, points) or ``right`` (the heat-map; only when there
        is one); ``titled=False`` leaves out the prompt and answer (the web page shows them). Returns RGB uint8."""
        extra = [f"answer: {self.text}" if self.text else "answer: (empty)"]
        if not self.has_seg:
            extra.append("no [SEG] emitted: nothing segmented")
        elif len(self.masks) > 1:
            extra.append(f"{len(self.masks)} [SEG] tokens; points and heat-map of [SEG] {query + 1}")
        heat = self.similarity[query].image if len(self.similarity) > query else None
        has_points = show_points and len(self.points) > query and len(self.points[query]) > 0
        return render_figure(
            self.image,
            pred_masks=list(self.masks),
            gt_masks=[] if gt is None else list(np.asarray(gt).reshape(-1, *self.image.shape[:2])),
            points=self.points[query] if has_points else None,
            labels=self.labels[query] if has_points else None,
            heat=heat,
            view_box=self.view_box if heat is not None else None,
            title=self.prompt if titled else "",
            lines=[*extra, *(lines or [])] if titled else [],
            panels=panels,
        )

    def save(self, path: str | Path, **kw) -> Path:
        """:meth:`render` written as a PNG; returns the path."""
        return write_png(path, self.render(**kw))
