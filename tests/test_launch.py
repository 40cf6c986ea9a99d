"""``scripts/_launch.sh`` and the training wrappers, run with ``bash`` against a fake ``deepspeed`` on PATH.

The scripts run from a copy of ``scripts/`` in a temporary repository layout, so nothing is written into the
checkout. The multi-node ``.deepspeed_env`` is also read back the way DeepSpeed's launcher reads it (its own
``add_export`` quoting) and evaluated by a shell, as pdsh does on every node, to check the values arrive intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import ROOT

FAKE_DEEPSPEED = """#!/usr/bin/env bash
for a in "$@"; do echo "ARG $a"; done
echo "ENV READ_13B_STAGE1=${READ_13B_STAGE1-<unset>}"
if [ -f .deepspeed_env ]; then echo "ENVFILE-BEGIN"; cat .deepspeed_env; echo "ENVFILE-END"; fi
"""

# Environment variables of the calling process that would change what the scripts do.
_SCRUB = re.compile(r"^(READ_|HF_|PYTHONPATH$|HOSTFILE$|MASTER_ADDR$|MASTER_PORT$|NUM_GPUS$|DS_ENV_FILE$)")


@pytest.fixture
def repo(tmp_path):
    """A repository layout with the real scripts, and a bin/ holding the fake deepspeed."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for script in (ROOT / "scripts").glob("*.sh"):
        shutil.copy2(script, root / "scripts" / script.name)
    (root / "hostfile").write_text("node-a slots=8\nnode-b slots=8\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "deepspeed"
    fake.write_text(FAKE_DEEPSPEED)
    fake.chmod(0o755)
    return root


def _env(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SCRUB.match(k)}
    env["PATH"] = f"{repo.parent / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(repo.parent)
    env.update(extra)
    return env


def _run(repo: Path, env: dict[str, str], script: str = "_launch.sh", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts" / script), *args], cwd=repo.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def _launches(stdout: str) -> list[dict]:
    """The fake deepspeed's calls: arguments, READ_13B_STAGE1 and the env file it saw."""
    calls = []
    current = None
    in_file = False
    for line in stdout.splitlines():
        if in_file:
            if line == "ENVFILE-END":
                in_file = False
            else:
                current["envfile"].append(line)
        elif line.startswith("ARG "):
            if current is None or current["done"]:
                current = {"args": [], "stage1": None, "envfile": None, "done": False}
                calls.append(current)
            current["args"].append(line[4:])
        elif line.startswith("ENV READ_13B_STAGE1="):
            current["stage1"] = line.split("=", 1)[1]
            current["done"] = True
        elif line == "ENVFILE-BEGIN":
            current["envfile"] = []
            in_file = True
    return calls


def _multi_node_env(repo: Path, **extra: str) -> dict[str, str]:
    return _env(repo, **{"HOSTFILE": str(repo / "hostfile"), "MASTER_ADDR": "10.1.2.3", "READ_SHARED_OUTPUT": "1",
                         **extra})


def _as_deepspeed_reads(env_file: Path) -> dict[str, str]:
    """Parse the file as deepspeed/launcher/runner.py does, quote with its add_export, evaluate as pdsh's shell."""
    from deepspeed.launcher.multinode_runner import MultiNodeRunner

    holder = types.SimpleNamespace(exports={})
    with open(env_file) as fd:
        for var in fd.readlines():
            key, val = var.split("=", maxsplit=1)
            MultiNodeRunner.add_export(holder, key, val)
    exports = "".join(f"export {k}={v}; " for k, v in holder.exports.items())
    dump = f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'"
    out = subprocess.run(["bash", "-c", exports + dump], env={"PATH": os.environ["PATH"]}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


# --- single node ----------------------------------------------------------------------------------------------------


def test_single_node_unchanged(repo):
    res = _run(repo, _env(repo, NUM_GPUS="4", READ_DATA_ROOT="/data"), "_launch.sh", "configs/x.yaml",
               "train.lr=1e-4")
    assert res.returncode == 0, res.stderr
    (call,) = _launches(res.stdout)
    assert call["args"] == ["--num_gpus", "4", "train.py", "--config", "configs/x.yaml", "train.lr=1e-4"]
    assert call["envfile"] is None
    assert not (repo / ".deepspeed_env").exists()

    res = _run(repo, _env(repo, NUM_GPUS="2", MASTER_PORT="29601"), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    assert _launches(res.stdout)[0]["args"] == ["--num_gpus", "2", "--master_port", "29601", "train.py", "--config",
                                                "configs/x.yaml"]


def test_single_node_needs_no_master_addr_nor_acknowledgement(repo):
    res = _run(repo, _env(repo, NUM_GPUS="1"), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    assert "READ_SHARED_OUTPUT" not in res.stderr


# --- multi-node -----------------------------------------------------------------------------------------------------


def test_multi_node_arguments(repo):
    res = _run(repo, _multi_node_env(repo), "_launch.sh", "configs/x.yaml", "train.lr=1e-4")
    assert res.returncode == 0, res.stderr
    (call,) = _launches(res.stdout)
    assert call["args"] == ["--hostfile", str(repo / "hostfile"), "--master_addr", "10.1.2.3", "--master_port",
                            "29500", "train.py", "--config", "configs/x.yaml", "train.lr=1e-4"]
    res = _run(repo, _multi_node_env(repo, MASTER_PORT="29777"), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    args = _launches(res.stdout)[0]["args"]
    assert args[args.index("--master_port") + 1] == "29777"


def test_env_file_content(repo):
    env = _multi_node_env(repo, READ_DATA_ROOT="/shared/data", READ_LLAVA_7B="/shared/llava-1.5-7b-hf",
                          HF_HOME="/shared/hf", HF_HUB_OFFLINE="1", PYTHONPATH="/opt/extra", OTHER_VAR="not-me",
                          NCCL_DEBUG="INFO")
    res = _run(repo, env, "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    env_file = repo / ".deepspeed_env"
    lines = env_file.read_text().splitlines()
    assert _launches(res.stdout)[0]["envfile"] == lines  # written before deepspeed starts
    assert sorted(lines) == sorted([
        "READ_DATA_ROOT=/shared/data", "READ_LLAVA_7B=/shared/llava-1.5-7b-hf", "READ_SHARED_OUTPUT=1",
        "HF_HOME=/shared/hf", "HF_HUB_OFFLINE=1", f"PYTHONPATH={repo.resolve()}:/opt/extra"])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # may hold HF_TOKEN


def test_env_file_values_arrive_intact(repo):
    """Values with spaces and shell characters survive DeepSpeed's own quoting and the remote shell."""
    values = {
        "READ_DATA_ROOT": "/shared/my datasets/reason seg",
        "READ_SAM_CKPT": "/ckpt/it's here;rm -rf x&|<>(*)?[a]#~!",
        "READ_EMPTY": "",
        "READ_EQUALS": "a=b=c",
        "HF_HOME": "/shared/hf cache",
    }
    res = _run(repo, _multi_node_env(repo, **values), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    remote = _as_deepspeed_reads(repo / ".deepspeed_env")
    for k, v in values.items():
        assert remote[k] == v, k
    assert remote["READ_SHARED_OUTPUT"] == "1"


@pytest.mark.parametrize("value", ["/a\nb", "/a\rb", "/a$HOME", '/a"b', "/a`id`", "/a\\b", " /lead", "/trail "],
                         ids=["newline", "cr", "dollar", "dquote", "backtick", "backslash", "lead", "trail"])
def test_unsafe_values_are_refused(repo, value):
    res = _run(repo, _multi_node_env(repo, READ_DATA_ROOT=value), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 2
    assert "READ_DATA_ROOT" in res.stderr
    assert not _launches(res.stdout)
    assert not (repo / ".deepspeed_env").exists()


def test_master_addr_required(repo):
    env = _multi_node_env(repo)
    del env["MASTER_ADDR"]
    res = _run(repo, env, "_launch.sh", "configs/x.yaml")
    assert res.returncode == 2
    assert "MASTER_ADDR" in res.stderr
    assert not _launches(res.stdout)
    assert not (repo / ".deepspeed_env").exists()


def test_bad_master_port_refused(repo):
    res = _run(repo, _multi_node_env(repo, MASTER_PORT="29x"), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 2
    assert "MASTER_PORT" in res.stderr
    assert not _launches(res.stdout)


@pytest.mark.parametrize("ack", [None, "", "0", "yes"])
def test_shared_output_acknowledgement_required(repo, ack):
    env = _multi_node_env(repo)
    if ack is None:
        del env["READ_SHARED_OUTPUT"]
    else:
        env["READ_SHARED_OUTPUT"] = ack
    res = _run(repo, env, "_launch.sh", "configs/x.yaml")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1  # one line that says why
    assert "READ_SHARED_OUTPUT=1" in res.stderr
    assert "output_dir" in res.stderr and "shared" in res.stderr and "resume" in res.stderr
    assert not _launches(res.stdout)
    assert not (repo / ".deepspeed_env").exists()


def test_relative_hostfile_is_taken_from_the_current_directory(repo):
    res = _run(repo, _multi_node_env(repo, HOSTFILE="repo/hostfile"), "_launch.sh", "configs/x.yaml")  # cwd: parent
    assert res.returncode == 0, res.stderr
    args = _launches(res.stdout)[0]["args"]
    assert args[:2] == ["--hostfile", str(repo.parent / "repo/hostfile")]


def test_missing_hostfile_refused(repo):
    res = _run(repo, _multi_node_env(repo, HOSTFILE=str(repo / "nope")), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 2
    assert "HOSTFILE" in res.stderr


def test_existing_env_file_keeps_other_lines_and_replaces_ours(repo):
    (repo / ".deepspeed_env").write_text("NCCL_SOCKET_IFNAME=eth0\nREAD_OLD=stale\nHF_HOME=/old\nPYTHONPATH=/old\n")
    res = _run(repo, _multi_node_env(repo, HF_HOME="/new"), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    lines = (repo / ".deepspeed_env").read_text().splitlines()
    assert sorted(lines) == ["HF_HOME=/new", "NCCL_SOCKET_IFNAME=eth0", "READ_SHARED_OUTPUT=1"]


def test_ds_env_file_name_is_honoured(repo):
    res = _run(repo, _multi_node_env(repo, DS_ENV_FILE="custom_env", READ_X="1"), "_launch.sh", "configs/x.yaml")
    assert res.returncode == 0, res.stderr
    assert "READ_X=1" in (repo / "custom_env").read_text().splitlines()
    assert not (repo / ".deepspeed_env").exists()


def test_deepspeed_env_is_ignored_by_git():
    res = subprocess.run(["git", "check-ignore", "-q", ".deepspeed_env"], cwd=ROOT)
    if res.returncode == 128:
        pytest.skip("not a git checkout")
    assert res.returncode == 0, ".deepspeed_env must be listed in .gitignore"


# --- wrappers -------------------------------------------------------------------------------------------------------


def test_13b_stage2_starts_from_stage1_best(repo):
    res = _run(repo, _env(repo, NUM_GPUS="8"), "train_read_13b.sh", "train.max_steps=10")
    assert res.returncode == 0, res.stderr
    stage1, stage2 = _launches(res.stdout)
    assert stage1["args"][-3:] == ["--config", "configs/train/read_13b_reasonseg_stage1.yaml", "train.max_steps=10"]
    assert stage2["args"][-3:] == ["--config", "configs/train/read_13b_reasonseg_stage2.yaml", "train.max_steps=10"]
    assert stage1["stage1"] == "<unset>"
    assert stage2["stage1"] == "runs/read_13b_stage1/checkpoints/best"
    # ... which is the stage-2 config's own default
    text = (ROOT / "configs" / "train" / "read_13b_reasonseg_stage2.yaml").read_text()
    default = re.search(r"\$\{env:READ_13B_STAGE1,([^}]+)\}", text).group(1)
    assert os.path.normpath(default) == stage2["stage1"]

    res = _run(repo, _env(repo, NUM_GPUS="8", READ_13B_STAGE1="/shared/s1/checkpoints/step_00004000"),
               "train_read_13b.sh")
    assert res.returncode == 0, res.stderr
    assert _launches(res.stdout)[1]["stage1"] == "/shared/s1/checkpoints/step_00004000"


def test_13b_multi_node_carries_the_stage1_path(repo):
    res = _run(repo, _multi_node_env(repo), "train_read_13b.sh")
    assert res.returncode == 0, res.stderr
    stage1, stage2 = _launches(res.stdout)
    assert not any(line.startswith("READ_13B_STAGE1=") for line in stage1["envfile"])
    assert "READ_13B_STAGE1=runs/read_13b_stage1/checkpoints/best" in stage2["envfile"]


@pytest.mark.parametrize("script,config", [("train_read_7b.sh", "configs/train/read_7b_reasonseg.yaml"),
                                           ("train_read_7b_referseg.sh", "configs/train/read_7b_referseg.yaml")])
def test_7b_wrappers(repo, script, config):
    res = _run(repo, _env(repo, NUM_GPUS="8"), script, "train.lr=3e-4")
    assert res.returncode == 0, res.stderr
    (call,) = _launches(res.stdout)
    assert call["args"] == ["--num_gpus", "8", "train.py", "--config", config, "train.lr=3e-4"]
    assert (ROOT / config).is_file()
