"""ReadPipeline on the tiny model: any image form gives the same answer, batched equals one by one, the masks equal
those ``evaluate.py --run`` scores with the ``generate`` protocol, the similarity and points equal slow direct
computations, and runs, merged models and official-layout releases all load."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY
from PIL import Image

from read.config import load_config

QUICK = ROOT / "configs" / "quickstart.yaml"
PROMPT = "What is red in this picture? Please output segmentation mask."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Generated data and a tiny run trained 40 steps on ReasonSeg (long enough to answer "[SEG]." and to predict
    non-empty masks on some validation images)."""
    import train as train_script
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    ensure_synthetic_root(data, seed=0)
    run = root / "run"
    train_script.main(["--config", str(QUICK), f"output_dir={run}", f"data.root={data}", "data.workers=0",
                       "train.progress=false", "train.epochs=1", "train.steps_per_epoch=40", "train.save_every=40",
                       "train.warmup_steps=1", "train.lr=1e-3", "data.datasets=[reason_seg]", "data.sample_rates=[1]",
                       "eval.after_train=false", "--no_auto_resume"])
    images = sorted((data / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))
    return SimpleNamespace(root=root, data=data, run=run, images=images)


@pytest.fixture(scope="module")
def pipe(world):
    from read.infer import ReadPipeline

    return ReadPipeline.from_pretrained(world.run, device="cpu")


def test_path_pil_and_numpy_give_the_same_prediction(pipe, world):
    path = world.images[2]
    a = pipe.predict(path, PROMPT)
    b = pipe.predict(Image.open(path), PROMPT)
    from read.data.io import load_image

    c = pipe.predict(load_image(path), PROMPT)
    assert a.text == b.text == c.text
    assert a.has_seg and a.masks.shape == (1, *Image.open(path).size[::-1])  # one mask at the original size
    assert a.masks.dtype == bool
    # the same pixels whatever the form (PIL decodes this JPEG like OpenCV does, to the last bit here)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), load_image(path))
    for other in (b, c):
        np.testing.assert_array_equal(a.masks, other.masks)
        np.testing.assert_array_equal(a.points[0], other.points[0])


def test_batched_equals_one_by_one(pipe, world):
    imgs = world.images[:5]
    prompts = [PROMPT, "the green shape", PROMPT, "Where is the blue circle? Please output segmentation mask.",
               "<image>\nWhich shape is yellow?"]
    batched = pipe.predict_batch(imgs, prompts)
    assert sum(int(p.masks.sum()) for p in batched) > 0  # not a vacuous comparison of empty masks
    for img, prompt, b in zip(imgs, prompts, batched):
        one = pipe.predict(img, prompt)
        assert one.text == b.text
        np.testing.assert_array_equal(one.masks, b.masks)
        for s1, s2 in zip(one.similarity, b.similarity):
            np.testing.assert_allclose(s1.grid, s2.grid, rtol=1e-4, atol=1e-4)
        for p1, p2, l1, l2 in zip(one.points, b.points, one.labels, b.labels):
            np.testing.assert_array_equal(l1, l2)
            np.testing.assert_allclose(p1, p2, atol=1e-3)


def test_masks_equal_those_of_evaluate_generate(pipe, world, tmp_path):
    """Per sample of the ReasonSeg val split: the record ``evaluate.py --run ... eval.protocol=generate`` writes
    (answer, intersection, union, predicted area and box against the ground truth) equals what the pipeline's mask
    gives for the same image and question."""
    import evaluate as evaluate_script
    from read.data.reason_seg import ReasonSegEvalDataset
    from read.eval import metrics as M

    n = 6
    evaluate_script.main(["--run", str(world.run), "eval.protocol=generate", f"eval.limit={n}", "eval.batch_size=4",
                          f"eval.output_dir={tmp_path / 'ev'}", "train.progress=false", "data.workers=0"])
    recs = {}
    for line in (tmp_path / "ev" / "records.rank0.jsonl").read_text().splitlines():
        rec = json.loads(line)
        recs[rec["index"]] = rec["queries"][0]
    ds = ReasonSegEvalDataset(world.data, "val", generate_prompts=True)
    questions = [ds[i].conversations[0][0][0] for i in range(n)]
    preds = pipe.predict_batch([ds[i].image for i in range(n)], questions)
    nonempty = 0
    for i, pred in enumerate(preds):
        gt = torch.from_numpy(ds[i].meta["gt_masks"][0].astype(np.int64))
        pm = torch.from_numpy(pred.masks[0]) if pred.has_seg else torch.zeros_like(gt, dtype=torch.bool)
        c = M.mask_counts(pm, gt)
        q = recs[i]
        assert q["text"] == pred.text
        assert (q["intersection"], q["union"], q["pred_area"]) == (int(c["intersection"]), int(c["union"]),
                                                                   int(c["pred_area"]))
        box = M.mask_box(pm)
        assert q["pred_box"] == (list(box) if box is not None else None)
        nonempty += int(c["pred_area"]) > 0
    assert nonempty >= 1


def test_similarity_and_points_equal_a_slow_direct_computation(pipe, world):
    """The grid is the dot product of the [SEG] state (the state before [SEG], official) with the image-token
    states of transformers' own LLaVA forward over prompt + answer; the points are the one-item SasP function's."""
    from read.data.base import Sample
    from read.model.sasp import similarity_as_points

    img = world.images[2]
    pred = pipe.predict(img, PROMPT)
    assert pred.has_seg
    sample = Sample(image=np.asarray(Image.open(img).convert("RGB")), conversations=[[(pipe.question(PROMPT),
                                                                                      None)]])
    batch = pipe.collator([sample])
    assert pred.text.startswith("[SEG]")  # the first generated token is [SEG]
    ids = batch.input_ids[0].tolist()
    full = torch.tensor([ids + [pipe.model.seg_token_id]])
    with torch.no_grad():
        out = pipe.model.llava(input_ids=full, pixel_values=batch.pixel_values_clip, output_hidden_states=True)
    h = out.hidden_states[-1][0].float()
    seg_state = h[len(ids) - 1]  # the position whose logits produced [SEG]
    image_states = h[full[0] == pipe.model.image_token_id]
    slow = image_states @ seg_state
    np.testing.assert_allclose(pred.similarity[0].grid.ravel(), slow.numpy(), rtol=1e-4, atol=1e-4)
    h_img, w_img = pred.image.shape[:2]
    assert pred.similarity[0].image.shape == (h_img, w_img)
    sasp = pipe.cfg.model.sasp
    coords, labels = similarity_as_points(
        torch.from_numpy(pred.similarity[0].grid.ravel()), (h_img, w_img), num_points=sasp.num_points,
        t_pos=sasp.t_pos, t_neg=sasp.t_neg, down_sample=sasp.down_sample, clip_size=pipe.clip_size,
        continuous=sasp.continuous)
    np.testing.assert_array_equal(labels.numpy(), pred.labels[0])
    np.testing.assert_allclose(coords.numpy(), pred.points[0], atol=1e-3)
    # points are in image pixels
    assert (pred.points[0][:, 0] < w_img).all() and (pred.points[0][:, 1] < h_img).all()


def test_merged_model_predicts_like_the_run(pipe, world):
    from read.infer import ReadPipeline

    sys.path.insert(0, str(ROOT / "scripts"))
    import merge_lora

    out = world.root / "merged"
    merge_lora.main(["--run", str(world.run), "--out", str(out)])
    merged = ReadPipeline.from_pretrained(out, device="cpu")
    for img in world.images[:3]:
        a, b = pipe.predict(img, PROMPT), merged.predict(img, PROMPT)
        assert a.text == b.text
        np.testing.assert_array_equal(a.masks, b.masks)


def test_official_release_loads_and_predicts_like_its_source(tmp_path, world):
    from release_helpers import (
        FULL_RELEASE_CONFIG,
        official_release_dict,
        write_release,
        write_tokenizer_files,
    )

    from read.infer import ReadPipeline
    from read.model.builder import build_read_model
    from read.utils.device import seed_everything

    release = tmp_path / "release"
    write_tokenizer_files(release)
    over = [f"model.vlm.tokenizer={release}", "model.lora.enabled=false"]
    cfg = load_config(TINY, over)
    seed_everything(cfg.train.seed)  # releases hold no CLIP: the rebuilt model draws its random tiny CLIP so
    source, tok = build_read_model(cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # every released tensor differs from a fresh build
        for name, prm in source.named_parameters():
            if "vision_tower" not in name:
                prm.add_(0.02 * torch.randn(prm.shape, generator=gen))
    write_release(release, official_release_dict(source), shards=2, config=FULL_RELEASE_CONFIG)
    loaded = ReadPipeline.from_pretrained(release, device="cpu", config=TINY, overrides=over)
    direct = ReadPipeline(source, tok, cfg, "cpu")
    for img in world.images[:2]:
        a, b = loaded.predict(img, PROMPT, max_new_tokens=8), direct.predict(img, PROMPT, max_new_tokens=8)
        assert a.text == b.text
        np.testing.assert_array_equal(a.masks, b.masks)
    # without config=, a release is matched to READ-7B/13B by its hidden size, and anything else is named
    with pytest.raises(ValueError, match="hidden_size 64"):
        ReadPipeline.from_pretrained(release, device="cpu")


def test_a_yaml_config_runs_the_tiny_model_without_weights(world):
    from read.infer import ReadPipeline

    pipe = ReadPipeline.from_pretrained(TINY, device="cpu")
    pred = pipe.predict(world.images[0], PROMPT, max_new_tokens=4)
    assert isinstance(pred.text, str) and pred.masks.shape[1:] == pred.image.shape[:2]


def test_bad_inputs_are_named(pipe, tmp_path):
    from read.data.base import DataError
    from read.infer import ReadPipeline

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        pipe.predict(bad, PROMPT)
    with pytest.raises(DataError, match="shape"):
        pipe.predict(np.zeros((4, 5, 2), np.uint8), PROMPT)
    with pytest.raises(ValueError, match="prompt"):
        pipe.predict(np.zeros((8, 8, 3), np.uint8), "  ")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        pipe.predict_batch([np.zeros((8, 8, 3), np.uint8)] * 2, [PROMPT])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ReadPipeline.from_pretrained(tmp_path / "nowhere", device="cpu")


def test_quantization_needs_cuda_and_targets_only_decoder_linears(tiny_model):
    from read.infer import ReadPipeline
    from read.model.quantize import linear_layers_to_quantize, quantize_language_model

    with pytest.raises(ValueError, match="4-bit loading .* needs a CUDA device"):
        ReadPipeline.from_pretrained(TINY, device="cpu", quantize="4bit")
    with pytest.raises(ValueError, match="8bit"):
        quantize_language_model(tiny_model[0], "8 bits", torch.device("cuda"))
    import copy

    from read.model.builder import merge_lora

    model = copy.deepcopy(tiny_model[0])
    merge_lora(model)  # quantize_language_model merges LoRA first
    names = linear_layers_to_quantize(model)
    # 2 decoder layers x (q, k, v, o, gate, up, down); never lm_head, CLIP, the projector, SAM or the [SEG] MLP
    assert len(names) == 14
    assert all(".language_model.layers." in n for n in names)
    assert not any(s in n for n in names for s in ("lm_head", "vision_tower", "projector", "sam", "text_hidden"))


# ----------------------------------------------------------------------------------------------------- demo CLI


def load_demo():
    sys.path.insert(0, str(ROOT / "scripts"))
    import demo

    return demo


def test_demo_cli_writes_a_picture_of_the_expected_size_with_a_legend(world, tmp_path, capsys):
    import cv2

    from read.utils.render import COLOURS, PAD, fit_scale, heat_colours

    demo = load_demo()
    img = world.images[2]
    paths = demo.main(["--model", str(world.run), "--image", str(img), "--prompt", PROMPT, "--out", str(tmp_path),
                       "--device", "cpu"])
    assert paths == [tmp_path / f"{img.stem}_0.png"]
    out = capsys.readouterr().out
    assert "answer: [SEG]" in out and "picture:" in out
    fig = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    h, w = cv2.imread(str(img)).shape[:2]
    s = fit_scale(h, w)
    assert fig.shape[1] == 3 * PAD + 2 * round(w * s)  # image panel + heat-map panel
    assert fig.shape[0] > round(h * s) + 60  # title and legend bands around the panels
    legend = fig[-70:]
    assert np.all(legend == COLOURS["positive"], axis=-1).any()
    assert np.all(legend == heat_colours(np.ones((1, 1), np.float32))[0, 0], axis=-1).any()
    # a second call never overwrites the first picture
    assert demo.main(["--model", str(world.run), "--image", str(img), "--prompt", PROMPT, "--out", str(tmp_path),
                      "--device", "cpu"]) == [tmp_path / f"{img.stem}_1.png"]


def test_demo_cli_names_a_corrupt_image_in_one_line(world, tmp_path, capsys):
    from read.cli import main_with_errors

    demo = load_demo()
    bad = tmp_path / "cut.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(SystemExit) as exc:
        main_with_errors(demo.main, ["--model", str(world.run), "--image", str(bad), "--prompt", PROMPT])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.png" in err[0]


def test_demo_interactive_loop(world, tmp_path, monkeypatch, capsys):
    demo = load_demo()
    replies = iter([str(world.images[1]), PROMPT, "", str(tmp_path / "nowhere.jpg"), PROMPT, "exit"])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(replies))
    demo.main(["--model", str(world.run), "--interactive", "--out", str(tmp_path), "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("answer:") == 1 and "nowhere.jpg" in out  # the bad path is said, then the loop goes on
    assert (tmp_path / f"{world.images[1].stem}_0.png").is_file()


def test_generate_protocol_writes_readable_overlays(world, tmp_path):
    import cv2

    import evaluate as evaluate_script
    from read.utils.render import MIN_SIDE, PAD, fit_scale

    evaluate_script.main(["--run", str(world.run), "eval.protocol=generate", "eval.limit=2", "eval.overlays=2",
                          f"eval.output_dir={tmp_path}", "train.progress=false", "data.workers=0"])
    shots = sorted(tmp_path.glob("overlay_*.png"))
    assert [p.name for p in shots] == ["overlay_00000.png", "overlay_00001.png"]
    for p, img in zip(shots, world.images[:2]):
        fig = cv2.imread(str(p))
        h, w = cv2.imread(str(img)).shape[:2]
        s = fit_scale(h, w)
        assert round(max(h, w) * s) >= MIN_SIDE  # each panel's long side is at least 512 pixels
        assert fig.shape[1] == 3 * PAD + 2 * round(w * s)  # the image and its heat-map
