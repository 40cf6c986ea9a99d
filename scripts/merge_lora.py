"""Merge a run's LoRA adapters into the base weights and save a standalone model.

    python scripts/merge_lora.py --run runs/read_7b_reasonseg --out merged/read_7b [--checkpoint DIR]
                                 [--official]

Rebuilds the model exactly as evaluation does (``read.model.rebuild``: the run's ``config.yaml``, its ``train.init``
base, e.g. the SESAME release the run started from, and the latest or given checkpoint, whose base is checked
exactly), merges every LoRA layer (W += alpha/r * B A) and writes ``model.safetensors`` (full state dict, no LoRA),
the tokenizer and a ``config.yaml`` (``model.lora.enabled: false``, ``train.init: llava``) that rebuilds exactly
these keys. ``evaluate.py --config OUT/config.yaml eval.weights=OUT`` then evaluates it and gives the same masks. ``--official`` also writes the official merged READ
key layout (``model.embed_tokens.weight``, ``model.visual_model.*``, ...) as ``official/model.safetensors``; this
needs the official token order ([SEG]/<im_start>/<im_end> before <image>, i.e. a model started from an official
release), which a model started from llava-hf (``<image>``=32000) cannot have.
(The official merge script never passes --lora_r, so r=64 runs fail there; here r comes from the config.)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training run directory (config.yaml + checkpoints/)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", default=None, help="a specific checkpoint directory (default: latest)")
    parser.add_argument("--official", action="store_true", help="also export the official key layout (models started from an official release only)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = parser.parse_args(argv)

    from safetensors.torch import save_file

    from read.config import load_config, save_config
    from read.model.builder import merge_lora
    from read.model.rebuild import check_paths, rebuild

    run, out = Path(args.run), Path(args.out)
    cfg = load_config(run / "config.yaml")
    if not cfg.model.lora.enabled:
        raise ValueError(f"{run}: this run has no LoRA (model.lora.enabled is false): nothing to merge")
    weights = Path(args.checkpoint) if args.checkpoint else run
    check_paths(cfg, weights, weights_key="--checkpoint" if args.checkpoint else "--run")
    built = rebuild(cfg, weights)
    model, tokenizer = built.model, built.tokenizer
    n = merge_lora(model)
    official = None
    if args.official:  # convert first: refuse before writing anything
        from read.model.convert import read_to_official_state_dict

        official = {k: v.contiguous() for k, v in read_to_official_state_dict(model).items()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"))
    tokenizer.save_pretrained(out)
    merged_cfg = copy.deepcopy(cfg)
    merged_cfg.model.lora.enabled = False
    merged_cfg.model.vlm.tokenizer = str(out.resolve())
    merged_cfg.model.sam.checkpoint = None  # SAM is inside model.safetensors
    merged_cfg.train.init = "llava"  # the merged weights already contain the base the run started from
    merged_cfg.train.init_checkpoint = None
    merged_cfg.eval.weights = str(out.resolve())
    save_config(merged_cfg, out)
    if official is not None:
        (out / "official").mkdir(exist_ok=True)
        save_file(official, str(out / "official" / "model.safetensors"))
    print(f"merged {n} LoRA layers from {built.weights} into {out / 'model.safetensors'}")
    return out


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
