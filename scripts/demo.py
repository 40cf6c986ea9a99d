"""Ask a READ model about your own image: prints the answer and writes one PNG (mask, SasP points, heat-map, legend).

    python scripts/demo.py --model runs/quickstart --image photo.jpg --prompt "What can hold water?"
    python scripts/demo.py --model configs/model/tiny.yaml --image photo.jpg --prompt "the cat"   # no weights
    python scripts/demo.py --model $READ_WEIGHTS --interactive                    # a chat loop like the official demo
    python scripts/demo.py --model merged/x --image a.jpg --prompt "..." --quantize 4bit --dtype bf16   # CUDA

``--model`` is anything :meth:`read.ReadPipeline.from_pretrained` loads: a run directory, a checkpoint, a merged
model, an official release folder or a YAML config. The picture is ``<out>/<image stem>_<n>.png`` (n counts up, so
nothing is overwritten): left the image with every predicted mask and the SasP points of the first [SEG]; right
the first [SEG]'s similarity heat-map over the image (greyed outside the part CLIP sees); the prompt and the
answer on top, a legend below. In ``--interactive`` mode an empty question asks for a new image, ``exit`` quits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def next_free(out: Path, stem: str) -> Path:
    """``out/<stem>_<n>.png`` with the smallest n not taken yet."""
    n = 0
    while (out / f"{stem}_{n}.png").exists():
        n += 1
    return out / f"{stem}_{n}.png"


def answer(pipe, image: str, prompt: str, out: Path, *, show_points: bool, max_new_tokens: int | None) -> Path:
    """Predict, print the answer, write the picture; returns its path."""
    pred = pipe.predict(image, prompt, max_new_tokens=max_new_tokens)
    print(f"answer: {pred.text}")
    print(f"[SEG] tokens: {len(pred.masks)}" + (f"  mask pixels: {[int(m.sum()) for m in pred.masks]}"
                                                 if pred.has_seg else "  (nothing segmented)"))
    path = pred.save(next_free(out, Path(image).stem), show_points=show_points)
    print(f"picture: {path}")
    return path


def interactive(pipe, out: Path, args) -> None:  # noqa: ANN001
    from read.cli import one_line, user_error_types

    image = args.image
    while True:
        try:
            if not image:
                image = input("image path (or exit): ").strip()
                if image in ("exit", "quit"):
                    return
                if not image:
                    continue
            prompt = input("question (empty: new image, exit: quit): ").strip()
        except EOFError:
            return
        if prompt in ("exit", "quit"):
            return
        if not prompt:
            image = None
            continue
        try:
            answer(pipe, image, prompt, out, show_points=not args.no_points, max_new_tokens=args.max_new_tokens)
        except user_error_types() as e:  # a bad path or image: say so and ask again
            print(f"error: {one_line(e)}")
            image = None


def main(argv: list[str] | None = None) -> list[Path] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run, checkpoint, merged model, release folder or YAML config")
    parser.add_argument("--image", help="image file")
    parser.add_argument("--prompt", help="the question (\"<image>\\n\" is put in front)")
    parser.add_argument("--out", default="demo_out", help="folder for the pictures (default: demo_out)")
    parser.add_argument("--interactive", action="store_true", help="chat loop: image path, then questions")
    parser.add_argument("--config", help="config to use instead of the one next to --model (e.g. for a release)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="cast after loading")
    parser.add_argument("--quantize", default=None, choices=["8bit", "4bit"], help="language model in 8/4 bit (CUDA)")
    parser.add_argument("--conv-template", default=None, choices=["llava_v1", "vicuna_v1"],
                        help="default: evaluation's template (vicuna_v1 = the official demo's prompt)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the config's eval.max_new_tokens")
    parser.add_argument("--no-points", action="store_true", help="do not draw the SasP points")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model.sasp.num_points=60")
    args = parser.parse_args(argv)
    if not args.interactive and not (args.image and args.prompt):
        parser.error("--image and --prompt are required (or use --interactive)")

    from read.infer import ReadPipeline
    from read.infer.images import as_rgb

    if args.image and not args.interactive:
        as_rgb(args.image)  # a bad image fails before the model is loaded
    pipe = ReadPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, config=args.config,
                                        overrides=args.overrides, quantize=args.quantize,
                                        conv_template=args.conv_template)
    out = Path(args.out)
    if args.interactive:
        interactive(pipe, out, args)
        return None
    return [answer(pipe, args.image, args.prompt, out, show_points=not args.no_points,
                   max_new_tokens=args.max_new_tokens)]


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
