"""The MLflow UI as a new user meets it, in headless Chromium: a real run, `arflare ui`, screenshots."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from arflare.cli import main
from arflare.data.synth import generate
from tests.arflare._browser import chromium, dom, screenshot, screenshots_dir
from tests.arflare.test_ui import _free_port, read_until

REPO = Path(__file__).resolve().parents[2]
_WAIT_MS = 25000  # virtual time for the single-page app to fetch runs and draw


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A registry folder with one 5-epoch smoke run of exp5_atto_mixup, served by `arflare ui`."""
    folder = tmp_path_factory.mktemp("ui")
    data = tmp_path_factory.mktemp("data")
    # 16 ARs: the smallest seed-0 set whose test split holds both classes (8 ARs give a test split
    # without a flare, and a screenshot full of NaN AUCs)
    generate(data, ars=16, size=24, hours=10, seed=0, progress=False, overwrite=True)
    shutil.copy(REPO / "experiments.yaml", folder / "experiments.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        assert main(["run", "exp5_atto_mixup", "--profile", "smoke", "--file", str(folder / "experiments.yaml"),
                     "--set", f"data.root={data / 'magnetograms'}", "--set", "data.generate_if_missing=false",
                     "--set", "train.epochs=5", "--set", "train.max_steps_per_epoch=3"]) == 0
    # No jump in the charts: every val/* history holds each epoch once (the best checkpoint's
    # scores go to best/val_*, never re-logged at the last epoch's step).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("arflare").experiment_id])
    for name in ("val/loss", "val/tss", "val/auc"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2, 3, 4, 5], name
    assert "best/val_tss" in run.data.metrics
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(REPO)}
    ui = subprocess.Popen([sys.executable, "-m", "arflare.cli", "ui", "--port", str(port), "--no-browser",
                           "--file", str(folder / "experiments.yaml")], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env)
    try:
        text = read_until(ui, "(Ctrl-C")
        urls = [word for word in text.split() if word.startswith("http://")]
        assert len(urls) == 2, text  # the runs table, and the same view as per-epoch charts
        yield urls
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)


@pytest.mark.browser
def test_runs_table_shows_metrics_without_configuration(served, tmp_path):
    table_url, _ = served
    command = chromium(tmp_path / "profile")
    page = dom(command, table_url, wait_ms=_WAIT_MS)
    assert "Training runs" in page and "exp5_atto_mixup" in page
    assert "best/val_tss" in page and "test/auc" in page  # metric columns (further ones scroll in)
    pixels = screenshot(command, table_url, screenshots_dir(tmp_path) / "ui_runs_table.png", wait_ms=_WAIT_MS)
    assert (pixels < 128).mean() > 0.005


@pytest.mark.browser
def test_runs_charts_show_per_epoch_curves(served, tmp_path):
    _, charts_url = served
    command = chromium(tmp_path / "profile")
    page = dom(command, charts_url, wait_ms=_WAIT_MS)
    for chart in ("train/loss", "val/loss", "val/tss"):
        assert chart in page, chart
    pixels = screenshot(command, charts_url, screenshots_dir(tmp_path) / "ui_run_charts.png", size="1600,1100",
                        wait_ms=_WAIT_MS)
    assert (pixels < 128).mean() > 0.005
