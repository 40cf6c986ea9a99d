"""The [SEG] projection MLP ``H -> H -> out_dim`` (official ``text_hidden_fcs``, spec 1.4)."""

from __future__ import annotations

from torch import Tensor, nn


class SegProjector(nn.ModuleList):
    """``Linear(H, H) -> ReLU -> Linear(H, out_dim) -> Dropout(0)``.

    Kept as ``ModuleList([Sequential(...)])`` so that parameter names equal the released checkpoints'
    (``text_hidden_fcs.0.0.weight``, ``text_hidden_fcs.0.2.weight``) once their ``model.`` prefix is removed.
    (The paper's "[512, 4096, 4096]" does not match the code; we follow the code.)
    """

    def __init__(self, hidden_size: int, out_dim: int = 256) -> None:
        super().__init__(
            [
                nn.Sequential(
                    nn.Linear(hidden_size, hidden_size),
                    nn.ReLU(inplace=True),
                    nn.Linear(hidden_size, out_dim),
                    nn.Dropout(0.0),
                )
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[..., H] -> [..., out_dim]``."""
        return self[0](x)
