"""Outputs of an analysis: the Table-1 summary (JSON + markdown, one row per model), the per-sample figure row, and
``report.html``: one self-contained file (figures embedded as data URIs, no script or style from elsewhere) with
the table, the figures, per-sample rows sortable by IoU and the settings."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from read.eval.metrics import SegMetricAccumulator
from read.utils.render import Panel, render_panels

__all__ = ["combine_tables", "figure_row", "summarise", "table_markdown", "write_outputs"]

COLUMNS = {"p_prompt": "P_prompt", "s_iou": "S_IoU", "seg_prompt": "[SEG]_prompt"}


def summarise(records: list[dict], settings, *, seconds: float = 0.0) -> dict:  # noqa: ANN001 - AnalysisSettings
    """gIoU / cIoU per method over all queries (the evaluation's accumulator and epsilons), plus S_IoU against the
    SAM decoder's map when present, the mean chosen threshold and the settings."""
    out: dict = {"model": settings.model, "dataset": settings.dataset, "split": settings.split,
                 "num_samples": len(records), "num_queries": sum(len(r["queries"]) for r in records),
                 "methods": {}, "settings": asdict(settings), "sam_for_p_prompt": settings.describe_sam(),
                 "clip_text_map": settings.describe_clip(),
                 "seconds_this_run": round(seconds, 2)}
    queries = [q for r in records for q in r["queries"]]
    for key in (*COLUMNS, "s_iou_sam", "s_iou_clip"):
        got = [q[key] for q in queries if key in q]
        if not got:
            continue
        acc = SegMetricAccumulator()
        acc.update_counts([g["intersection"] for g in got], [g["union"] for g in got])
        res = acc.result()
        out["methods"][key] = {"giou": float(res["giou"]), "ciou": float(res["ciou"]), "num_masks": len(got)}
    if queries:
        out["methods"]["s_iou"]["mean_threshold"] = float(np.mean([q["s_iou"]["threshold"] for q in queries]))
        out["methods"]["p_prompt"]["mean_k"] = float(np.mean([q["p_prompt"]["k"] for q in queries]))
    return out


def table_markdown(summaries: list[dict]) -> str:
    """Table 1 of the paper: one row per model, gIoU and cIoU (in %) of P_prompt, S_IoU and [SEG]_prompt."""
    head = "| model | dataset | " + " | ".join(f"{c} gIoU | {c} cIoU" for c in COLUMNS.values()) + " |"
    sep = "| --- | --- |" + " ---: | ---: |" * len(COLUMNS)
    rows = [head, sep]
    for s in summaries:
        cells = []
        for key in COLUMNS:
            m = s["methods"].get(key)
            cells += [f"{100 * m['giou']:.1f}", f"{100 * m['ciou']:.1f}"] if m else ["-", "-"]
        rows.append(f"| {s['model']} | {s['dataset']}/{s['split']} ({s['num_samples']}) | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def combine_tables(folders: list[Path]) -> tuple[str, list[dict]]:
    """Read each folder's ``summary.json`` into one table (one row each).

    Raises:
        FileNotFoundError: a folder without a finished analysis (named).
    """
    summaries = []
    for f in folders:
        file = Path(f) / "summary.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no finished analysis there (run scripts/analyze.py first)")
        summaries.append(json.loads(file.read_text()))
    return table_markdown(summaries), summaries


def figure_row(image: np.ndarray, fig: dict, view_box, query: str) -> np.ndarray:  # noqa: ANN001
    """Fig. 1 / Fig. 4-5 style row: image + GT | LLaVA map | SAM-decoder map | P_prompt points + mask |
    [SEG]_prompt mask (+ SasP points). RGB uint8, each panel's long side 256-384 px."""
    gt = [fig["gt"]]
    panels = [
        Panel("image, ground truth", gt_masks=gt),
        Panel(f"{fig.get('vlm', 'LLaVA')} map (S_IoU t={fig['siou_threshold']:.2f})", gt_masks=gt, heat=fig["llava_map"],
              view_box=view_box),
    ]
    if fig["sam_map"] is not None:
        panels.append(Panel("SAM decoder map", gt_masks=gt, heat=fig["sam_map"]))
    if fig.get("clip_map") is not None:
        panels.append(Panel(f"CLIP map of '{fig['clip_word']}'", gt_masks=gt, heat=fig["clip_map"],
                            view_box=view_box))
    panels.append(Panel("P_prompt: points -> SAM", pred_masks=[fig["p_mask"]], gt_masks=gt, points=fig["p_points"],
                        labels=fig["p_labels"]))
    panels.append(Panel("[SEG]_prompt (the model)", pred_masks=[fig["seg_mask"]], gt_masks=gt,
                        points=fig["sasp_points"], labels=fig["sasp_labels"]))
    return render_panels(image, panels, title=query, min_side=256, max_side=384)


def _iou(c: dict) -> float:
    return c["intersection"] / c["union"] if c["union"] else 1.0


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


SORT_JS = """
function sortBy(col, numeric) {
  const table = document.getElementById('samples');
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const dir = table.dataset.col == col && table.dataset.dir == 'asc' ? 'desc' : 'asc';
  rows.sort((a, b) => {
    const x = a.cells[col].dataset.v ?? a.cells[col].textContent;
    const y = b.cells[col].dataset.v ?? b.cells[col].textContent;
    const c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
    return dir == 'asc' ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
  table.dataset.col = col; table.dataset.dir = dir;
}
"""

STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td.l, th.l { text-align: left; }
th.sort { cursor: pointer; background: #f0f0f0; }
img.fig { max-width: 100%; border: 1px solid #ddd; margin: 6px 0; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
"""


def _html_table(summary: dict) -> str:
    head = "".join(f"<th colspan=2>{html.escape(c)}</th>" for c in COLUMNS.values())
    sub = "<th>gIoU</th><th>cIoU</th>" * len(COLUMNS)
    cells = ""
    for key in COLUMNS:
        m = summary["methods"].get(key)
        cells += f"<td>{100 * m['giou']:.1f}</td><td>{100 * m['ciou']:.1f}</td>" if m else "<td>-</td><td>-</td>"
    return (f"<table id='table1'><tr><th class=l rowspan=2>model</th>{head}</tr><tr>{sub}</tr>"
            f"<tr><td class=l>{html.escape(summary['model'])}</td>{cells}</tr></table>")


def write_report_html(out_dir: Path, summary: dict, records: list[dict]) -> Path:
    """``report.html`` (see the module docstring); figures are read from ``figures/`` and embedded."""
    out_dir = Path(out_dir)
    figs = sorted((out_dir / "figures").glob("*.png"))
    fig_html = "\n".join(
        f"<figure><img class=fig id='fig-{p.stem}' src='{_data_uri(p)}' alt='sample {int(p.stem)}'>"
        f"<figcaption>sample {int(p.stem)}</figcaption></figure>" for p in figs)
    rows = []
    for r in records:
        for k, q in enumerate(r["queries"]):
            vals = [_iou(q["p_prompt"]), q["s_iou"]["iou"], _iou(q["seg_prompt"])]
            cells = "".join(f"<td data-v='{v:.6f}'>{100 * v:.1f}</td>" for v in vals)
            fig = f"<a href='#fig-{r['index']:05d}'>figure</a>" if (out_dir / "figures" /
                                                                   f"{r['index']:05d}.png").is_file() else ""
            rows.append(f"<tr><td data-v='{r['index']:08d}'>{r['index']}{'.' + str(k) if k else ''}</td>"
                        f"<td class=l>{html.escape(r['query'])}</td>{cells}"
                        f"<td data-v='{q['s_iou']['threshold']:.4f}'>{q['s_iou']['threshold']:.2f}</td>"
                        f"<td data-v='{q['p_prompt']['k']}'>{q['p_prompt']['k']}</td><td class=l>{fig}</td></tr>")
    heads = [("sample", True), ("query", False), ("P_prompt IoU", True), ("S_IoU", True), ("[SEG]_prompt IoU", True),
             ("S_IoU threshold", True), ("k", True)]
    th = "".join(f"<th class='sort{' l' if not num else ''}' onclick='sortBy({i}, {str(num).lower()})'>"
                 f"{html.escape(h)}</th>" for i, (h, num) in enumerate(heads)) + "<th class=l>figure</th>"
    title = f"READ analysis: {summary['model']} on {summary['dataset']}/{summary['split']}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{summary['num_samples']} samples, {summary['num_queries']} queries. P_prompt: SAM prompted by the k highest and k
lowest similarity points only ({html.escape(summary['sam_for_p_prompt'])}). S_IoU: the [SEG] map against the language
model's image tokens, thresholded at the best t per image (step {summary['settings']['step']}). [SEG]_prompt: the
model's own masks. Values in %. Definitions: docs/ANALYSIS.md. CLIP word map:
{html.escape(summary['clip_text_map'])}.</p>
<h2>Table 1</h2>
{_html_table(summary)}
<h2>Figures</h2>
<p>Per row: image with the ground truth (yellow outline); the [SEG] map over the language model's image tokens (grey:
outside the square CLIP sees); the map over the SAM decoder's image tokens; P_prompt's points and mask; the model's
mask with its SasP points.</p>
{fig_html or '<p>No figures (--figures 0).</p>'}
<h2>Samples</h2>
<p>Click a column header to sort.</p>
<table id="samples"><thead><tr>{th}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Settings</h2>
<pre id="settings">{html.escape(json.dumps(summary['settings'], indent=1))}</pre>
<script>{SORT_JS}</script>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(doc)
    return path


def write_outputs(out_dir: Path, summary: dict, records: list[dict]) -> None:
    """``summary.json``, ``table.md`` and ``report.html`` in ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "table.md").write_text(table_markdown([summary]))
    write_report_html(out_dir, summary, records)
