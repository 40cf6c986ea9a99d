"""Convert an official READ / SESAME / LISA release (merged Hugging Face folder) to this project's format.

    python scripts/convert_released_ckpt.py --config configs/model/read_7b.yaml \\
        --released /path/to/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset --out checkpoints/read_7b_reasonseg \\
        [key=value ...]

The model is built from ``--config`` (its ``model.vlm.pretrained`` llava-hf base gives the architecture and
the CLIP tower, which releases do not contain), with the tokenizer of the release folder (``[SEG]=32000,
<im_start>=32001, <im_end>=32002``, ``<image>=32003`` appended), without LoRA and without loading the SAM
``.pth`` (SAM comes from the release). The release is then loaded strictly (``read.model.convert``).

Written to ``--out``:

* ``model.safetensors``: the full ``ReadModel`` state dict (CLIP included, no LoRA keys), in
  ``model.vlm.dtype``;
* ``tokenizer.model`` + ``read_tokenizer.json`` (``ReadTokenizer.save_pretrained``);
* ``config.yaml``: the resolved config with ``model.vlm.tokenizer`` = the output folder (absolute path),
  ``model.lora.enabled: false`` and ``model.sam.checkpoint: null`` (the weights are in ``model.safetensors``),
  so that ``build_read_model(load_config(OUT))`` has exactly the keys of ``model.safetensors``;
* ``conversion_report.json``: what was loaded, skipped and kept from the base; ``released_vocab_size`` is the
  official vocabulary (restrict logits to it to decode exactly like the official model).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from read.config import ReadConfig, load_config, save_config
from read.model.builder import build_read_model
from read.model.convert import load_released_checkpoint
from read.utils.device import seed_everything

WEIGHTS_FILE = "model.safetensors"
REPORT_FILE = "conversion_report.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="model config of the release's size (configs/)"
    )
    parser.add_argument("--released", required=True, type=Path, help="official merged release folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing OUT/{WEIGHTS_FILE}")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model.vlm.dtype=fp32")
    return parser


def conversion_config(cfg: ReadConfig, released: Path) -> ReadConfig:
    """The config the model is built with: release tokenizer, no LoRA, no SAM ``.pth``, nothing to initialise from
    (the written ``model.safetensors`` is the whole model; ``evaluate.py --config OUT/config.yaml`` loads it)."""
    cfg = copy.deepcopy(cfg)
    cfg.model.vlm.tokenizer = str(released)
    cfg.model.lora.enabled = False
    cfg.model.sam.checkpoint = None
    cfg.train.init = "llava"
    cfg.train.init_checkpoint = None
    return cfg


def convert(
    config: Path, released: Path, out: Path, overrides: list[str], *, overwrite: bool = False
) -> dict:
    """Build, load the release, write ``out``. Returns the load report (also written to ``out``)."""
    from safetensors.torch import save_file

    if not released.is_dir():
        raise FileNotFoundError(f"release folder not found: {released}")
    if (out / WEIGHTS_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / WEIGHTS_FILE} exists; pass --overwrite to replace it")
    cfg = conversion_config(load_config(config, overrides), released)

    t0 = time.time()
    seed_everything(cfg.train.seed)
    model, tokenizer = build_read_model(cfg)
    report = load_released_checkpoint(model, tokenizer, released, strict=True)
    print(
        f"loaded {report['loaded_keys']} tensors from {released} ({report['layout']} layout) in "
        f"{time.time() - t0:.1f}s; {report['kept_from_base']} CLIP tensors from the base; "
        f"vocabulary rows copied: {report['released_vocab_size']} of {report['model_vocab_rows']}"
    )

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "source": str(released)})
    tmp.replace(out / WEIGHTS_FILE)
    tokenizer.save_pretrained(out)
    cfg.model.vlm.tokenizer = str(out.resolve())
    cfg.eval.weights = str(out.resolve())
    save_config(cfg, out)
    report = {**report, "config": str(config), "overrides": list(overrides)}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / WEIGHTS_FILE}, the tokenizer and config.yaml to {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    convert(args.config, args.released, args.out, args.overrides, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    from read.cli import main_with_errors

    sys.exit(main_with_errors(main))
