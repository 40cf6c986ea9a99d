"""Package structure: layers (utils/config < model < data < train, eval, infer, analysis < cli), no import cycles, module sizes,
and no API that the installed transformers says it will remove."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT

PACKAGE = ROOT / "read"
LAYERS = {"utils": 1, "config": 1, "model": 2, "data": 3, "train": 4, "eval": 4, "infer": 4, "analysis": 4, "miniature": 4, "cli": 5}
MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "read" or len(parts) < 2:
        return None  # the package root (lazy re-exports) and third-party modules
    return LAYERS[parts[1]]


def imports_of(path: Path) -> set[str]:
    """Every ``read.*`` module a file imports, at any depth (function bodies and TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("read"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("read"):
            out.add(node.module)
            for a in node.names:  # ``from read.model import llava_backbone``
                candidate = f"{node.module}.{a.name}"
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file():
                    out.add(candidate)
    return out


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    names = {module_name(p) for p in files}
    g = {}
    for p in files:
        mod = module_name(p)
        # a package import resolves to its __init__; keep only project modules
        g[mod] = {m for m in imports_of(p) if m in names and m != mod}
    return g


def test_every_module_imports_only_its_layer_or_lower():
    bad = []
    for mod, deps in graph().items():
        mine = layer_of(mod)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if theirs is not None and theirs > mine:
                bad.append(f"{mod} -> {dep}")
    assert not bad, bad
    # the explicit rule: the model never imports the data pipeline
    assert not [d for m, deps in graph().items() if m.startswith("read.model") for d in deps
                if d.startswith("read.data")]


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if dep.count(".") == 1 and dep not in g:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif state.get(dep) is None:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(g):
        if state.get(node) is None:
            visit(node, [node])
    # a package's __init__ re-exporting its own submodules is not a cycle between files
    real = [c for c in cycles if not any(a == b.rsplit(".", 1)[0] or b == a.rsplit(".", 1)[0]
                                         for a, b in zip(c, c[1:]))]
    assert not real, real


def test_modules_stay_small():
    big = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def test_no_transformers_api_marked_for_removal(tiny_cfg):
    """Generation (KV cache keyword) and activation checkpointing use what the installed transformers offers."""
    import copy

    from conftest import make_tiny_batch

    from read.model.builder import build_read_model
    from read.model.generate import greedy_generate, left_pad

    cfg = copy.deepcopy(tiny_cfg)
    cfg.model.vlm.gradient_checkpointing = True
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=FutureWarning, module=r"transformers|torch")
        warnings.filterwarnings("error", message=r".*(deprecated|will be removed).*")
        torch.manual_seed(0)
        model, tok = build_read_model(cfg)
        batch = make_tiny_batch(model, tok, cfg)
        model.train()
        model(batch).loss.total.backward()
        model.eval()
        greedy_generate(model, left_pad(batch, tok.pad_id), max_new_tokens=3, eos_id=tok.eos_id, pad_id=tok.pad_id)


@pytest.mark.parametrize("name", ["read.model", "read.data", "read.train", "read.eval"])
def test_layer_packages_import_alone(name):
    import importlib

    importlib.import_module(name)
