"""Per-rank device selection (``resolve_device``) and the flash-attn import test (``resolve_attn_implementation``).

No CUDA here: CUDA availability and the device count are given explicitly or monkeypatched.
"""

from __future__ import annotations

import logging
import sys
import types

import pytest
import torch
from conftest import TINY

from read.config import load_config
from read.model.llava_backbone import resolve_attn_implementation
from read.utils.device import resolve_device

GPU8 = {"cuda_available": True, "device_count": 8}


# --- resolve_device -------------------------------------------------------------------------------------------------


def test_cuda_without_index_is_the_local_rank():
    assert resolve_device("cuda", 3, **GPU8) == torch.device("cuda", 3)
    assert resolve_device("cuda", 0, **GPU8) == torch.device("cuda", 0)


def test_auto_with_cuda_is_the_local_rank():
    assert resolve_device("auto", 3, **GPU8) == torch.device("cuda", 3)


def test_explicit_cuda_index_is_kept():
    assert resolve_device("cuda:1", 3, **GPU8) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", 0, **GPU8) == torch.device("cuda", 1)


def test_local_rank_without_a_gpu_is_an_error():
    with pytest.raises(ValueError, match=r"device: cuda .*cuda:8 \(LOCAL_RANK=8\).*only 8 CUDA device"):
        resolve_device("cuda", 8, **GPU8)
    with pytest.raises(ValueError, match=r"device: auto .*LOCAL_RANK=2.*only 2 CUDA device"):
        resolve_device("auto", 2, cuda_available=True, device_count=2)


def test_explicit_index_past_the_visible_devices_is_an_error():
    with pytest.raises(ValueError, match=r"device: cuda:8 .*only 8 CUDA device"):
        resolve_device("cuda:8", 0, **GPU8)


def test_cuda_without_cuda_is_an_error():
    with pytest.raises(ValueError, match="device: cuda .*no CUDA device"):
        resolve_device("cuda", 0, cuda_available=False, device_count=0)


def test_cpu_stays_cpu():
    assert resolve_device("cpu", 3, **GPU8) == torch.device("cpu")
    assert resolve_device("cpu", 0, cuda_available=False) == torch.device("cpu")


def test_auto_without_cuda_is_mps_or_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto", 3, cuda_available=False) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto", 0, cuda_available=False) == torch.device("mps")


def test_setup_distributed_puts_each_rank_on_its_gpu(monkeypatch):
    """train.py: ``device: cuda`` with LOCAL_RANK=3 selects and sets cuda:3 (not GPU 0 for every rank)."""
    import train as train_script

    chosen = []
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    cfg = load_config(TINY, ["device=cuda", "train.engine=torch"])
    rank, world, device = train_script.setup_distributed(cfg)
    assert (rank, world, device) == (0, 1, torch.device("cuda", 3))
    assert chosen == [torch.device("cuda", 3)]

    chosen.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_script.setup_distributed(load_config(TINY, ["device=cpu", "train.engine=torch"]))[2] == torch.device(
        "cpu")
    assert chosen == []


# --- resolve_attn_implementation ------------------------------------------------------------------------------------


@pytest.fixture
def cuda_and_flash_metadata(monkeypatch):
    """CUDA 'available' and flash-attn 'installed' according to its package metadata."""
    import transformers.utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    return monkeypatch


def _broken_module(exc: Exception) -> types.ModuleType:
    """A flash_attn that imports but whose CUDA extension fails to load (as a wheel built for another torch)."""
    mod = types.ModuleType("flash_attn")

    def __getattr__(name):
        raise exc

    mod.__getattr__ = __getattr__
    return mod


@pytest.mark.parametrize("broken", [
    None,  # import flash_attn fails (ImportError)
    _broken_module(OSError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")),
    _broken_module(RuntimeError("CUDA driver too old")),
], ids=["import-error", "undefined-symbol", "runtime-error"])
def test_auto_falls_back_to_sdpa_with_one_warning(cuda_and_flash_metadata, caplog, broken):
    cuda_and_flash_metadata.setitem(sys.modules, "flash_attn", broken)
    with caplog.at_level(logging.WARNING, logger="read"):
        assert resolve_attn_implementation("auto") == "sdpa"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "pip install flash-attn --no-build-isolation" in msg
    assert "sdpa" in msg
    if broken is not None:
        assert "undefined symbol" in msg or "CUDA driver too old" in msg


def test_explicit_flash_attention_2_that_does_not_import_raises(cuda_and_flash_metadata):
    cuda_and_flash_metadata.setitem(sys.modules, "flash_attn", _broken_module(OSError("undefined symbol: _Zfoo")))
    with pytest.raises(ImportError, match=r"undefined symbol: _Zfoo.*pip install flash-attn --no-build-isolation"):
        resolve_attn_implementation("flash_attention_2")
    cuda_and_flash_metadata.setitem(sys.modules, "flash_attn", None)
    with pytest.raises(ImportError, match="pip install flash-attn --no-build-isolation"):
        resolve_attn_implementation("flash_attention_2")


def test_explicit_flash_attention_2_not_installed_raises(monkeypatch):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    with pytest.raises(ImportError, match="not installed.*pip install flash-attn --no-build-isolation"):
        resolve_attn_implementation("flash_attention_2")


def test_working_flash_attn_is_accepted(cuda_and_flash_metadata, caplog):
    mod = types.ModuleType("flash_attn")
    mod.flash_attn_func = lambda *a, **k: None
    cuda_and_flash_metadata.setitem(sys.modules, "flash_attn", mod)
    with caplog.at_level(logging.WARNING, logger="read"):
        assert resolve_attn_implementation("auto") == "flash_attention_2"
        assert resolve_attn_implementation("flash_attention_2") == "flash_attention_2"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_cuda_or_no_flash_attn_is_sdpa_silently(monkeypatch, caplog):
    import transformers.utils

    monkeypatch.setitem(sys.modules, "flash_attn", None)  # would fail if it were import-tested
    with caplog.at_level(logging.WARNING, logger="read"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
        assert resolve_attn_implementation("auto") == "sdpa"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
        assert resolve_attn_implementation("auto") == "sdpa"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_other_names_pass_through():
    assert resolve_attn_implementation("sdpa") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"
