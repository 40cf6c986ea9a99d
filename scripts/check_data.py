"""Check a data root before training: for every dataset the config names, report found/missing splits, item
counts, and every unreadable or damaged image and malformed annotation (one line each: file and reason; the walk
never stops at a bad file); optionally write mask overlays. gRefCOCO is checked when a referring list names
``grefcoco`` or ``<root>/refer_seg/grefcoco`` exists (items: images of all splits; detail: expressions per split,
no-target and multi-target counts).

    python scripts/check_data.py --root $READ_DATA_ROOT [--config configs/train/read_7b_reasonseg.yaml]
                                 [--limit 200] [--overlays 4 --overlay-dir runs/overlays] [--json report.json]

Exit status 1 when anything is missing or bad.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from read.config import DataConfig, load_config  # noqa: E402
from read.data.base import DataError  # noqa: E402


@dataclass
class Report:
    name: str
    status: str = "ok"  # ok | missing | bad
    count: int = 0
    checked: int = 0
    detail: str = ""
    problems: list[str] = field(default_factory=list)


class Concat:
    """Items of several datasets one after another."""

    def __init__(self, parts: list) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int):
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)


def overlay(image: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """BGR image with each mask tinted (255 = ignore shown in grey)."""
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).astype(np.float32)
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255)]
    if masks is not None:
        for k, m in enumerate(masks):
            c = np.array(colours[k % len(colours)], np.float32)
            out[m == 1] = 0.5 * out[m == 1] + 0.5 * c
            out[m == 255] = 0.5 * out[m == 255] + 0.5 * np.array((128, 128, 128), np.float32)
    return out.clip(0, 255).astype(np.uint8)


def one_line(text: str) -> str:
    """A problem as one report line (messages never span lines in the report)."""
    return " ".join(str(text).split())


def describe(e: BaseException, where: str) -> str:
    """A DataError already starts with its file; anything else gets the dataset/item it came from."""
    if isinstance(e, DataError):
        return one_line(str(e))
    return one_line(f"{where}: {type(e).__name__}: {e}")


def check(name: str, make: Callable[[], object], *, limit: int | None, overlays: int, overlay_dir: Path | None,
          detail: Callable[[object], str] | None = None) -> Report:
    """Build one dataset and load every item (or the first ``limit``); a bad item is recorded and the walk goes
    on, so every bad file is reported, not only the first."""
    rep = Report(name)
    try:
        ds = make()
    except (DataError, FileNotFoundError) as e:
        rep.status, rep.detail = "missing", one_line(str(e))
        return rep
    except Exception as e:  # a loader bug must not hide the other datasets' reports
        rep.status, rep.detail = "bad", describe(e, name)
        return rep
    rep.count = len(ds)
    if detail is not None:
        try:
            rep.detail = detail(ds)
        except Exception as e:  # the bad file is reported again by its item below
            rep.detail = f"(detail unavailable: {describe(e, name)})"
    n = rep.count if limit is None else min(rep.count, limit)
    for i in range(n):
        try:
            s = ds[i]
            s_masks = s.masks if s.masks is not None else s.meta.get("gt_masks")
        except Exception as e:  # report and keep counting
            rep.problems.append(describe(e, f"{name} item {i}"))
            continue
        rep.checked += 1
        if overlay_dir is not None and i < overlays:
            overlay_dir.mkdir(parents=True, exist_ok=True)
            safe = name.replace("/", "_").replace("+", "plus")
            cv2.imwrite(str(overlay_dir / f"{safe}_{i:03d}.jpg"), overlay(s.image, s_masks))
    if rep.problems:
        rep.status = "bad"
    return rep


def grefcoco_counts(ann) -> dict[str, dict[str, int]]:
    """Per split of a :class:`~read.data.grefer.GRefCOCO`: images, refs, expressions (sentences), and the
    no-target (``ann_id == [-1]``) and multi-target (several ids) expressions among them."""
    out = {}
    for split in ann.splits:
        refs = ann.refs_by_split(split)
        out[split] = {
            "images": len({int(r["image_id"]) for r in refs}),
            "refs": len(refs),
            "expressions": sum(len(r["sentences"]) for r in refs),
            "no_target": sum(len(r["sentences"]) for r in refs if ann.is_no_target(r)),
            "multi_target": sum(len(r["sentences"]) for r in refs if len(ann.ann_ids(r)) > 1),
        }
    return out


def grefcoco_job(root: Path) -> tuple[str, Callable[[], object], Callable]:
    """gRefCOCO: every image of every split (its evaluation items: image, every expression's mask), with the
    expressions per split and the no-target / multi-target counts as the detail. A missing image or a segmentation
    that cannot be decoded is reported per image; a ref naming an unknown annotation stops the load (missing)."""
    from read.data.grefer import GRefCOCO
    from read.data.gsva_eval import GRefCOCOEvalDataset

    def all_splits():
        ann = GRefCOCO(root)
        return Concat([GRefCOCOEvalDataset(root, s) for s in ann.splits])

    def detail(_ds):
        counts = grefcoco_counts(GRefCOCO(root))
        return ", ".join(f"{s}: {c['images']} images, {c['expressions']} expressions ({c['no_target']} no-target, "
                         f"{c['multi_target']} multi-target)" for s, c in counts.items())

    return "refer_seg/grefcoco", all_splits, detail


def plan(cfg: DataConfig, root: Path) -> list[tuple[str, Callable[[], object], Callable | None]]:
    """(name, constructor, detail) for every concrete dataset/split the config's mixture keys cover."""
    from read.data import refer, refer_seg, sem_seg, vqa
    from read.data.reason_seg import ReasonSegEvalDataset

    jobs: list[tuple[str, Callable[[], object], Callable | None]] = []
    keys = set(cfg.datasets) | {"reason_seg"}  # ReasonSeg val/test are always needed for evaluation
    if "reason_seg" in keys:
        for split in ("train", "val", "test"):
            jobs.append((f"reason_seg/{split}", lambda s=split: ReasonSegEvalDataset(root, s),
                         lambda _ds, s=split: f"{len(ReasonSegEvalDataset(root, s, subset='long'))} long queries"))
    refer_names: list[str] = []
    for key, names in (("refer_seg", cfg.refer_seg_data), ("neg_refer_seg", cfg.neg_refer_seg_data),
                       ("correct_refer_seg", cfg.correct_refer_seg_data)):
        if key in keys:
            refer_names += [n for n in names if n not in refer_names]
    from read.data import grefer

    if grefer.GREFCOCO in refer_names or (root / "refer_seg" / grefer.GREFCOCO).is_dir():
        jobs.append(grefcoco_job(root))
    refer_names = [n for n in refer_names if n != grefer.GREFCOCO]
    for ds_name in refer_names:
        def splits_detail(_ds, n=ds_name):
            a = refer.ReferAnnotations(root, n)
            return ", ".join(f"{s}: {len(a.refs_by_split(s))} refs" for s in a.splits)

        def all_splits(n=ds_name):
            a = refer.ReferAnnotations(root, n)
            return Concat([refer_seg.ReferSegEvalDataset(root, n, s) for s in a.splits])

        jobs.append((f"refer_seg/{ds_name}", all_splits, splits_detail))
    if "sem_seg" in keys:
        for n in cfg.sem_seg_data:
            jobs.append((f"sem_seg/{n}", lambda n=n: sem_seg.SemSegDataset(root, (n,)), None))
    if "vqa" in keys:
        jobs.append(("vqa/llava_instruct_150k", lambda: vqa.VQADataset(root), None))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="data root (the official ../dataset layout)")
    parser.add_argument("--config", default=None, help="config whose data.* section to check (default: all keys)")
    parser.add_argument("--limit", type=int, default=None, help="check at most this many items per dataset")
    parser.add_argument("--overlays", type=int, default=0, help="write this many mask overlays per dataset")
    parser.add_argument("--overlay-dir", default="runs/data_overlays")
    parser.add_argument("--json", default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    cfg = load_config(args.config).data if args.config else DataConfig()
    root = Path(args.root)
    overlay_dir = Path(args.overlay_dir) if args.overlays > 0 else None
    reports = [check(name, make, limit=args.limit, overlays=args.overlays, overlay_dir=overlay_dir, detail=detail)
               for name, make, detail in plan(cfg, root)]
    width = max(len(r.name) for r in reports)
    for r in reports:
        print(f"{r.name:<{width}}  {r.status:<7}  items {r.count:>6}  checked {r.checked:>6}  {r.detail}")
        for p in r.problems:
            print(f"    BAD  {p}")
    bad = [r for r in reports if r.status != "ok"]
    print(f"\n{len(reports) - len(bad)} ok, {sum(r.status == 'missing' for r in bad)} missing, "
          f"{sum(r.status == 'bad' for r in bad)} with bad items ({sum(len(r.problems) for r in reports)} bad items)")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in reports], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    from read.cli import main_with_errors

    sys.exit(main_with_errors(main))
