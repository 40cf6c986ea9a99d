"""Evaluation batches loaded by DataLoader workers: the same records, metrics, resume, errors and RNG as loading
on the main thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY

from read.config import load_config

QUICK = ROOT / "configs" / "quickstart.yaml"
N_VAL = 8  # items of the synthetic ReasonSeg val split
BATCH = 3  # does not divide N_VAL: batches of 3, 3, 2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("eval_loader_data")
    ensure_synthetic_root(root, seed=0)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """Worker processes compete for the two cores; with one intra-op thread the main process's BLAS cannot change
    its summation order under that load, so records can be compared exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_tok():
    from read.model.builder import build_read_model

    torch.manual_seed(0)
    model, tok = build_read_model(load_config(TINY))
    return model.eval(), tok


def eval_cfg(root: Path, out: Path, workers: int, *extra: str):
    return load_config(QUICK, [f"data.root={root}", f"data.workers={workers}", f"eval.output_dir={out}",
                               f"eval.batch_size={BATCH}", "train.progress=false", *extra])


def run_eval(model_tok, root: Path, out: Path, workers: int, *extra: str, overwrite: bool = False) -> dict:
    from read.eval.run import run_evaluation

    model, tok = model_tok
    return run_evaluation(eval_cfg(root, out, workers, *extra), model, tok, device=torch.device("cpu"),
                          weights_digest="x" * 64, overwrite=overwrite)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.rank0.jsonl").read_text().splitlines()]


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "output_dir"}


@pytest.mark.parametrize("protocol", ["teacher_forced", "generate"])
def test_workers_give_the_same_records_and_metrics(model_tok, data_root, tmp_path, protocol):
    extra = [f"eval.protocol={protocol}", "eval.max_new_tokens=6", "eval.overlays=2"]
    main = run_eval(model_tok, data_root, tmp_path / "w0", 0, *extra)
    workers = run_eval(model_tok, data_root, tmp_path / "w2", 2, *extra)
    assert main["num_samples"] == N_VAL and N_VAL % BATCH != 0
    rec0, rec2 = records(tmp_path / "w0"), records(tmp_path / "w2")
    assert [r["index"] for r in rec2] == list(range(N_VAL))
    assert rec2 == rec0  # every field of every record, in the same order
    assert comparable(workers) == comparable(main)
    if protocol == "generate":
        assert all("text" in q for r in rec2 for q in r["queries"])
    else:  # overlays need the samples carried through the loader
        shots = sorted(p.name for p in (tmp_path / "w2").glob("overlay_*.png"))
        assert shots == ["overlay_00000.png", "overlay_00001.png"]
        for name in shots:
            assert (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w0" / name).read_bytes()


def test_resumed_evaluation_with_workers_equals_uninterrupted(model_tok, data_root, tmp_path):
    full = run_eval(model_tok, data_root, tmp_path / "full", 2)
    out = tmp_path / "cut"
    run_eval(model_tok, data_root, out, 2)
    rec = out / "records.rank0.jsonl"
    lines = rec.read_text().splitlines()
    rec.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # crash mid-line after 3 items
    (out / "results.json").unlink()
    resumed = run_eval(model_tok, data_root, out, 2)
    assert comparable(resumed) == comparable(full)
    assert records(out) == records(tmp_path / "full")  # the cut line dropped, items 3.. redone in order


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpeg_in_a_worker_raises_the_data_error_naming_the_file(model_tok, tmp_path, workers):
    from read.data.base import DataError
    from read.data.io import load_image
    from read.data.synth import ensure_synthetic_root

    root = tmp_path / "data"
    ensure_synthetic_root(root, seed=0)
    images = sorted((root / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))
    assert len(images) == N_VAL
    bad = images[4]  # in the second batch: the first one is recorded before the error
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as direct:
        load_image(bad)

    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        run_eval(model_tok, root, out, workers)
    assert type(err.value) is DataError
    assert str(err.value) == str(direct.value)  # one clear message, not a wrapped worker traceback
    assert str(bad) in str(err.value) and "Traceback" not in str(err.value)
    assert [r["index"] for r in records(out)] == [0, 1, 2]  # the batch before the bad item was flushed


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_leaves_the_global_rng_untouched(model_tok, data_root, tmp_path, workers):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    res = run_eval(model_tok, data_root, tmp_path / "rng", workers)
    assert res["num_samples"] == N_VAL
    assert torch.equal(torch.get_rng_state(), before)


def test_predict_accepts_samples_or_their_collated_batch(model_tok, data_root, tmp_path):
    import numpy as np

    from read.eval.evaluator import Evaluator, build_eval_dataset

    model, tok = model_tok
    cfg = eval_cfg(data_root, tmp_path / "unused", 0)
    dataset = build_eval_dataset(cfg, data_root)
    ev = Evaluator(cfg, model, tok, dataset, output_dir=tmp_path / "unused", device=torch.device("cpu"))
    samples = [dataset[i] for i in range(BATCH)]
    a, b = ev.predict(samples), ev.predict_batch(ev.collate(samples))
    assert len(a) == len(b) == BATCH
    for pa, pb in zip(a, b, strict=True):
        assert np.array_equal(pa["masks"], pb["masks"])


@pytest.mark.gpu
def test_pinned_batches_on_cuda_equal_the_main_thread_path(model_tok, data_root, tmp_path):
    """On CUDA: pinned batches, copied without blocking, give the same records as the unpinned main-thread path."""
    from read.eval.evaluator import Evaluator, build_eval_dataset
    from read.eval.loader import EvalItem
    from read.eval.run import run_evaluation

    model, tok = model_tok
    dev = torch.device("cuda")
    cfg = eval_cfg(data_root, tmp_path / "x", 0)
    dataset = build_eval_dataset(cfg, data_root)
    ev = Evaluator(cfg, model, tok, dataset, output_dir=tmp_path / "x", device=dev)
    batch = ev.collate([dataset[i] for i in range(BATCH)])
    pinned = EvalItem([0, 1, 2], [], batch).pin_memory().batch
    assert pinned.pixel_values_sam.is_pinned() and pinned.input_ids.is_pinned()
    a = batch.to(dev, dtype=torch.bfloat16)
    b = pinned.to(dev, dtype=torch.bfloat16, non_blocking=True)
    torch.cuda.synchronize()
    for name in ("input_ids", "pixel_values_clip", "pixel_values_sam", "image_hw"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    try:
        model.to(dev)
        res = {}
        for workers in (0, 2):
            out = tmp_path / f"cuda{workers}"
            res[workers] = run_evaluation(eval_cfg(data_root, out, workers), model, tok, device=dev,
                                          weights_digest="x" * 64)
            res[workers].pop("output_dir")
        assert res[0] == res[2] and records(tmp_path / "cuda0") == records(tmp_path / "cuda2")
    finally:
        model.to("cpu")
