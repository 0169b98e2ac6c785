"""DDP on CPU (gloo, 2 processes): one MLflow run, each val/test sample scored once, metrics equal
to one process scoring the saved checkpoint, resume after SIGKILL, a fault on rank 1 ends every rank."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from arflare import record
from tests.arflare.test_cli import REPO, Workspace, synth, ws  # noqa: F401  (module fixtures, one set per module)

TINY = ("--set", "model.backbone=resnet10t", "--set", "eval.plots=false")
ENTRY = Path(__file__).with_name("_ddp_entry.py")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", **extra}


def _args(ws: Workspace, *extra: str) -> list[str]:
    return ["run", "exp1_basic_reg", "--profile", "smoke", *ws.data_sets, *TINY, *extra, "--file", str(ws.file)]


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, transitively (torchrun starts its ranks in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _single_process_scores(spec, best: dict, datasets: dict, split: str):
    """What one process gets scoring ``split`` with the checkpoint: the reference for DDP."""
    from arflare.builders import build_loss_from_spec, build_model_from_spec
    from arflare.evaluation import predict

    model = build_model_from_spec(spec)
    model.load_state_dict(best["model"])
    loader = torch.utils.data.DataLoader(datasets[split], batch_size=7)  # any batching gives the same scores
    return predict(model, loader, build_loss_from_spec(spec), torch.device("cpu"))


def test_ddp_run_killed_and_resumed_is_one_run_scoring_every_sample_once(ws):
    from arflare.builders import build_datasets, build_sampler
    from arflare.calibration import training_keep_rate
    from arflare.evaluation import split_metrics
    from arflare.lifecycle import prepare_data
    from arflare.spec import RunSpec

    args = _args(ws, "--set", "train.epochs=3", "--set", "train.max_steps_per_epoch=2", "--nproc", "2")
    process = subprocess.Popen([sys.executable, "-m", "arflare", *args], env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    local = ws.folder / "mlruns" / "local"
    deadline = time.monotonic() + 600
    while not list(local.glob("*/checkpoints/last.pt")):  # rank 0 saved epoch 1
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    for pid in _descendants(process.pid) + [process.pid]:  # the node dies: launcher and ranks at once
        os.kill(pid, signal.SIGKILL)
    process.wait()
    (killed,) = ws.runs("exp1_basic_reg")
    assert killed.info.status == "RUNNING"

    done = subprocess.run([sys.executable, "-m", "arflare", *args], env=_env(ARFLARE_STALE_AFTER="0"),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resume exp1_basic_reg: run {killed.info.run_id}" in done.stderr
    (run,) = ws.runs("exp1_basic_reg")  # rank 1 never opened a run of its own
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags[record.TAG_WORLD_SIZE] == "2" and run.data.tags[record.TAG_RESUMED] == "1"
    assert [m.step for m in ws.client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]

    best = torch.load(ws.client.download_artifacts(run.info.run_id, "checkpoints/best.pt"), weights_only=False)
    spec = RunSpec.model_validate(best["spec"])
    threshold = run.data.metrics["threshold"]
    datasets = build_datasets(spec, prepare_data(spec, progress=False))
    keep_rate = training_keep_rate(build_sampler(spec, datasets["train"]).negative_keep_rate(), spec.train.class_weights)
    assert run.data.metrics[record.METRIC_KEEP_RATE] == pytest.approx(keep_rate)
    for split, prefix in (("val", "best/val_"), ("test", "test/")):
        logged = pd.read_parquet(ws.client.download_artifacts(run.info.run_id, f"predictions/{split}.parquet"))
        reference = _single_process_scores(spec, best, datasets, split)
        keys = list(datasets[split].frame_table["key"])
        assert logged["key"].is_unique and list(logged["key"]) == keys, split  # each sample once, in order
        assert logged["score"].to_numpy() == pytest.approx(reference.scores, abs=1e-5)
        # The metrics are exactly those of the gathered scores (which equal one process's to 1e-5 above);
        # ranking metrics on the reference itself could move where two scores tie within that 1e-5.
        expected = split_metrics(dataclasses.replace(reference, scores=logged["score"].to_numpy()), threshold,
                                 keep_rate)
        for name, value in expected.items():
            got = run.data.metrics[f"{prefix}{name}"]
            assert (np.isnan(got) and np.isnan(value)) or got == pytest.approx(value, rel=1e-4, abs=1e-6), (split, name)


@pytest.mark.parametrize(("fault", "says"), [("error", "rank 1: ValueError: injected fault on rank 1"),
                                             ("nan", "non-finite on rank 1")])
def test_a_fault_on_rank_1_ends_every_rank_and_fails_the_run(ws, fault, says):
    before = {r.info.run_id for r in ws.runs("exp1_basic_reg")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(ENTRY),
               *_args(ws, "--force")]
    done = subprocess.run(command, env=_env(ARFLARE_TEST_FAULT=fault), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    (failed,) = [r for r in ws.runs("exp1_basic_reg") if r.info.run_id not in before]
    assert failed.info.status == "FAILED"
    assert says in failed.data.tags[record.TAG_ERROR], failed.data.tags[record.TAG_ERROR]
    assert "traceback" not in done.stderr.split("FAILED")[0].lower() or says in done.stderr


def test_ddp_refuses_batches_that_do_not_split_and_tree_kinds():
    from arflare.ddp_checks import check_spec
    from arflare.spec import RunSpec

    def spec(**train):
        return RunSpec.model_validate({"train": {"batch_size": 8} | train})

    assert check_spec(spec(), 1) == [] and check_spec(spec(), 2) == [] and check_spec(spec(), 4) == []
    (problem,) = check_spec(spec(), 3)
    assert "train.batch_size=8" in problem and "multiple of 3" in problem
    mixup = {"mixup": {"mixup_alpha": 0.2}}
    assert check_spec(spec(**mixup, batch_size=12), 2) == []  # 6 per rank: 3 pairs
    assert "multiple of 8" in check_spec(spec(**mixup, batch_size=12), 4)[0]  # 3 per rank: no pairs
    physics = RunSpec.model_validate({"model": {"kind": "physics"}})
    assert any("without --nproc" in p for p in check_spec(physics, 2))


def test_eval_shards_cover_every_position_once():
    from arflare.distributed import Ranks

    for world in (2, 3):
        shards = [Ranks(rank=r, world_size=world).eval_indices(10) for r in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert Ranks().eval_indices(10) is None  # one process: the plain in-order loader
