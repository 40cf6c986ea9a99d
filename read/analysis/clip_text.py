"""The CLIP text-to-image map of a word (READ Fig. 1(b)): where CLIP itself sees "antler", to compare with where the
[SEG] state attends.

The model's own CLIP is LLaVA's vision tower only (no text tower), so this needs a full ``CLIPModel`` folder (e.g. a
local copy of ``openai/clip-vit-large-patch14-336``: ``--clip DIR``). As the official ``visualize/vis.py``
(spec 8): the vision tower's last hidden states of every patch token through ``visual_projection`` (no
post-layernorm, CLS dropped), L2-normalised, dot the L2-normalised text feature of the word. The image goes through
the same shortest-side resize + centre crop as LLaVA's CLIP view, so the map has the same frame as the [SEG] map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from read.data.transforms import clip_preprocess

__all__ = ["ClipWordMaps"]


class ClipWordMaps:
    """``maps(image, word) -> [N]`` raw patch similarities of a word (N = s x s patches of the CLIP view).

    Raises:
        FileNotFoundError: the folder is missing; ValueError: its weights do not fill the model (strict).
    """

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu") -> None:
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no CLIPModel folder (config.json missing)")
        model, info = CLIPModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            kind, keys = next(iter(bad.items()))
            raise ValueError(f"{folder}: CLIP weights do not fit CLIPModel ({kind}: {sorted(keys)[:3]}...)")
        self.model = model.float().eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.size = int(model.config.vision_config.image_size)
        self.folder = folder
        self.device = torch.device(device)

    @torch.no_grad()
    def text_feature(self, word: str) -> Tensor:
        """``[D]`` L2-normalised projected text feature of ``word``."""
        ids = self.tokenizer([word], return_tensors="pt", padding=True).to(self.device)
        out = self.model.get_text_features(**ids)
        feat = out.pooler_output if hasattr(out, "pooler_output") else out
        return F.normalize(feat[0].float(), dim=-1)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, word: str) -> Tensor:
        """``[N]`` float32 similarities on the CLIP view of ``image`` (RGB uint8 ``[H, W, 3]``)."""
        pixels, _, _ = clip_preprocess(image, self.size)
        vision = self.model.vision_model(pixel_values=pixels[None].to(self.device), output_hidden_states=True)
        patches = self.model.visual_projection(vision.hidden_states[-1][0, 1:])  # [N, D], CLS dropped
        return (F.normalize(patches.float(), dim=-1) @ self.text_feature(word)).cpu()
