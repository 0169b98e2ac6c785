"""Runs that die and runs side by side: SIGKILL then resume, stale runs, eight first uses of one store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from arflare import record
from arflare.cli import main
from tests.arflare.test_cli import REPO, Workspace, synth, ws  # noqa: F401  (module fixtures, one set per module)

TINY = ("--set", "model.backbone=resnet10t", "--set", "eval.plots=false")
# Every process runs the preflight gates on the new store: the cheap settings of test_gates.py (fewer
# permutations, samples and grid cells) keep that a small part of eight processes sharing 2 cores.
CHEAP_GATES = ("--set", "gates.shortcut_permutations=19", "--set", "gates.shortcut_alpha=0.1",
               "--set", "gates.normalisation_samples=32", "--set", "gates.grid_per_class=2")


def _cli(ws: Workspace, *args: str) -> list[str]:
    return [sys.executable, "-m", "arflare.cli", *args, "--file", str(ws.file)]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def test_sigkilled_run_resumes_in_place_and_ends_like_an_uninterrupted_one(ws, capsys):
    args = ("run", "exp1_basic_reg", "--profile", "smoke", *ws.data_sets, *TINY,
            "--set", "train.epochs=4", "--set", "train.max_steps_per_epoch=3")
    process = subprocess.Popen(_cli(ws, *args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    local = ws.folder / "mlruns" / "local"
    deadline = time.monotonic() + 600
    while not list(local.glob("*/checkpoints/last.pt")):  # at least one epoch saved
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (killed,) = ws.runs("exp1_basic_reg")
    assert killed.info.status == "RUNNING"  # SIGKILL: nobody could tell the store

    assert main(["runs", "--stale-after", "0", "--file", str(ws.file)]) == 0
    assert "STALE" in capsys.readouterr().out
    os.environ["ARFLARE_STALE_AFTER"] = "0"  # the test cannot wait five minutes
    try:
        assert ws.arflare(*args) == 0
    finally:
        del os.environ["ARFLARE_STALE_AFTER"]
    assert f"resume exp1_basic_reg: run {killed.info.run_id}" in capsys.readouterr().err
    (resumed,) = ws.runs("exp1_basic_reg")
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags[record.TAG_RESUMED] == "1"
    for key in ("train/loss", "val/tss", "val/loss", "epoch_seconds"):
        assert [m.step for m in ws.client.get_metric_history(resumed.info.run_id, key)] == [1, 2, 3, 4], key
    assert not (local / resumed.info.run_id).exists()  # removed once the run ended

    assert ws.arflare(*args, "--force") == 0  # the same spec, never interrupted
    whole = next(r for r in ws.runs("exp1_basic_reg") if r.info.run_id != resumed.info.run_id)
    tests = {k: v for k, v in whole.data.metrics.items() if k.startswith(("test/", "best/"))}
    same = pd.Series({k: resumed.data.metrics.get(k) for k in tests}).equals(pd.Series(tests))  # NaN == NaN here
    assert tests and same, (tests, resumed.data.metrics)
    for split in ("val", "test"):
        frames = [pd.read_parquet(ws.client.download_artifacts(r.info.run_id, f"predictions/{split}.parquet"))
                  for r in (whole, resumed)]
        pd.testing.assert_frame_equal(*frames)


def test_runs_marks_stale_runs_killed_and_list_shows_them(ws, capsys):
    tracker_run = ws.client.create_run(ws.client.get_experiment_by_name("arflare").experiment_id,
                                       tags={record.TAG_EXPERIMENT: "exp2_basic_aug", record.TAG_KIND: "train",
                                             record.TAG_HEARTBEAT: "2020-01-01T00:00:00+00:00"})
    assert ws.arflare("list") == 0
    assert "1 stale" in capsys.readouterr().out
    assert ws.arflare("compare", "--all", "--format", "json") == 0  # --all: unranked runs are listed, not only counted
    assert "STALE" in capsys.readouterr().out
    assert ws.arflare("runs", "--mark-stale-killed") == 0
    assert "marked 1 stale run(s) KILLED" in capsys.readouterr().out
    assert ws.client.get_run(tracker_run.info.run_id).info.status == "KILLED"


def test_every_run_records_kind_version_config_hash_and_best_scores_once(ws):
    run = next(r for r in ws.runs("exp1_basic_reg") if r.info.status == "FINISHED")
    tags = run.data.tags
    for tag in record.RUN_TAGS:
        assert tags.get(tag), tag
    assert tags[record.TAG_KIND] == "train"
    assert [m.step for m in ws.client.get_metric_history(run.info.run_id, "best/val_tss")] == [int(run.data.metrics["best_epoch"])]


def test_runs_fill_mlflow_description_source_user_and_dataset(ws):
    run = next(r for r in ws.runs("exp1_basic_reg") if r.info.status == "FINISHED")
    tags = run.data.tags
    for tag in record.MLFLOW_RUN_FIELDS:
        assert tags.get(tag), tag
    assert tags[record.TAG_NOTE] == tags[record.TAG_DESCRIPTION]
    assert tags[record.TAG_SOURCE_NAME] == "arflare run exp1_basic_reg"
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.digest == tags[record.TAG_DATA_FINGERPRINT]
    assert data.dataset.name == "magnetograms" and str(ws.data) in data.dataset.source
    assert {(t.key, t.value) for t in data.tags} == {("mlflow.data.context", record.DATASET_CONTEXT)}


def test_eight_runs_started_at_once_on_a_new_store_all_finish(tmp_path, synth):
    ws8 = Workspace(tmp_path, synth)
    env = _env(ARFLARE_CACHE=str(tmp_path / "cache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(_cli(ws8, "index", str(synth / "magnetograms"))[:-2], env=env, check=True, capture_output=True)
    processes = [subprocess.Popen(_cli(ws8, "run", "exp1_basic_reg", "--profile", "smoke", *ws8.data_sets, *TINY,
                                       *CHEAP_GATES, "--set", f"train.seed={seed}"), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for seed in range(8)]
    errors = [p.communicate()[1].decode() for p in processes]
    failed = [f"seed {seed} exited {p.returncode}:\n{error[-4000:]}"  # the end holds the traceback
              for seed, (p, error) in enumerate(zip(processes, errors)) if p.returncode]
    assert not failed, "\n".join(failed)
    runs = ws8.runs("exp1_basic_reg")
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    checks = [r for r in ws8.runs() if r.data.tags.get(record.TAG_KIND) == "check"]
    assert len(checks) == 1  # one process ran the gates; the seven others waited for it and reused its check
    assert {r.data.tags[record.TAG_CHECK_RUN] for r in runs} == {checks[0].info.run_id}
    assert sorted(r.info.run_name for r in runs) == [f"exp1_basic_reg/seed={seed}" for seed in range(8)]
    assert len({r.data.tags[record.TAG_CONFIG_HASH] for r in runs}) == 1  # seeds of one configuration
    assert main(["compare", "--file", str(ws8.file)]) == 0  # the store stays readable
