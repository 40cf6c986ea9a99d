"""Web demo (Gradio, optional extra ``demo``): upload an image, ask a question, see the answer, overlay and heat-map.

    pip install -e '.[demo]'
    python scripts/web_demo.py --model runs/quickstart                 # http://127.0.0.1:7860
    python scripts/web_demo.py --model configs/model/tiny.yaml         # the tiny random model, no weights at all
    python scripts/web_demo.py --model $READ_WEIGHTS --dtype bf16 --host 0.0.0.0 --port 7861

``--model`` is anything :meth:`read.ReadPipeline.from_pretrained` loads. The page is served by this process only
(no share link, analytics off).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run, checkpoint, merged model, release folder or YAML config")
    parser.add_argument("--config", help="config to use instead of the one next to --model (e.g. for a release)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="cast after loading")
    parser.add_argument("--quantize", default=None, choices=["8bit", "4bit"], help="language model in 8/4 bit (CUDA)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)

    from read.infer import ReadPipeline
    from read.infer.web import build_app

    pipe = ReadPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, config=args.config,
                                        overrides=args.overrides, quantize=args.quantize)
    app = build_app(pipe)
    print(f"serving {args.model} on http://{args.host}:{args.port}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=True)


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
