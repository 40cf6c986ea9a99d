"""Write small synthetic datasets in every real on-disk format READ reads (no downloads).

    python scripts/make_synthetic_data.py --root data/synthetic [--seed 0] [--force]

ReasonSeg (labelme JSON + JPEG), refCOCO/+/g, refCLEF, FP-RefCOCO(+/g), R-RefCOCO(+/g) (REFER pickles +
COCO instances), ADE20K, COCO-Stuff, Mapillary, PACO-LVIS, PASCAL-Part and LLaVA-Instruct. Images are coloured
shapes whose masks are known exactly. Then check the tree with scripts/check_data.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from read.data.synth import MARKER, ensure_synthetic_root  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite even if the root holds a finished tree")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.force and (root / MARKER).is_file():
        (root / MARKER).unlink()
    info = ensure_synthetic_root(root, seed=args.seed)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    from read.cli import main_with_errors

    sys.exit(main_with_errors(main))
