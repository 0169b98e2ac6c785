"""`arflare report`: one self-contained HTML page, on a store of constructed runs."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arflare.cli import main
from registry.tracking import Tracker, default_artifact_location, resolve_tracking_uri
from tests.arflare._browser import chromium, dom, screenshot, screenshots_dir

REPO = Path(__file__).resolve().parents[2]


def _predictions(rng, skill: float, n: int = 600) -> pd.DataFrame:
    y = (rng.random(n) < 0.15).astype(int)
    score = 1 / (1 + np.exp(-(-1.5 + skill * y + rng.normal(0, 1, n))))
    return pd.DataFrame({"key": [f"k{i}" for i in range(n)], "ar": "1", "timestamp": pd.Timestamp("2020-01-01"),
                         "label": y, "reg_label": np.where(y == 1, "C1.0", ""), "score": score})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A registry folder whose store holds 3 seeds of exp2_basic_aug and 2 of exp5_atto_mixup."""
    folder = tmp_path_factory.mktemp("report")
    shutil.copy(REPO / "experiments.yaml", folder / "experiments.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracker = Tracker(tracking_uri=resolve_tracking_uri(folder), experiment="arflare",
                          artifact_location=default_artifact_location(folder))
    rng = np.random.default_rng(0)
    for experiment, skill, balance, seeds in (("exp2_basic_aug", 1.5, "none", 3), ("exp5_atto_mixup", 2.5, "prob", 2)):
        for seed in range(seeds):
            tags = {"arflare.experiment": experiment, "arflare.group": experiment}
            params = {"train": {"seed": seed}, "data": {"balance": balance, "keep_negative_prob": 0.3 if balance == "prob" else 1.0,
                                                        "min_flare_class": "C"}}
            with tracker.start_run(run_name=f"{experiment}/seed={seed}", tags=tags, params=params) as run:
                frame = _predictions(rng, skill + 0.3 * seed)
                path = folder / "tmp" / run.run_id / "test.parquet"
                path.parent.mkdir(parents=True)
                frame.to_parquet(path)
                run.log_artifact(path, "predictions")
                tss = 0.3 + 0.1 * skill + 0.02 * seed
                run.log_metrics({"val/tss": tss, "test/tss": tss - 0.05, "test/tss_lo": tss - 0.15,
                                 "test/tss_hi": tss + 0.05, "test/auc": 0.8, "test/threshold": 0.3, "val/threshold": 0.3})
    return folder


def test_report_is_one_self_contained_page(store, capsys):
    out = store / "out" / "report.html"
    assert main(["report", "exp2_basic_aug", "exp5_atto_mixup", "--out", str(out), "--file", str(store / "experiments.yaml")]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text()
    # nothing to fetch: no external src/href, every image is an inline SVG
    assert not re.search(r'(src|href)="(?!data:)', page)
    images = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert len(images) == 5  # ROC, PR, reliability, TSS vs threshold, seed spread
    assert all(base64.b64decode(i).lstrip().startswith(b"<?xml") for i in images)
    assert "exp5_atto_mixup/seed=1" in page and "mean±std" in page and "0.420 ± 0.020" in page  # exp2's 3 seeds
    assert "0.50 [0.40, 0.60]" in page  # an interval logged as test/tss_lo/_hi is shown beside the value
    assert "best on validation" in page and "600" not in page.split("flares / non-flares")[0][-5:]
    assert "corrected, q=0.3" in base64.b64decode(images[2]).decode()


def test_report_ranks_on_validation_by_default_and_says_so_when_asked_for_test(store, capsys):
    registry = ["--file", str(store / "experiments.yaml")]
    out = store / "out" / "val.html"
    assert main(["report", "exp2_basic_aug", "exp5_atto_mixup", "--out", str(out), *registry]) == 0
    page = out.read_text()
    assert "Ranked by val TSS" in page and "RANKED ON TEST" not in page
    assert "Spread over runs: best/val_tss" in base64.b64decode(re.findall(r'base64,([^"]+)"', page)[-1]).decode()
    out = store / "out" / "test.html"
    assert main(["report", "exp2_basic_aug", "exp5_atto_mixup", "--split", "test", "--out", str(out), *registry]) == 0
    page = out.read_text()
    assert "Ranked by test TSS" in page and "RANKED ON TEST (--split test)" in page


def test_report_of_an_unknown_experiment_exits_2(store, capsys):
    assert main(["report", "nope", "--file", str(store / "experiments.yaml")]) == 2
    assert "unknown experiment(s) nope; available:" in capsys.readouterr().err


@pytest.mark.browser
def test_report_renders_in_headless_chromium(store, tmp_path):
    """Renders offline in a real browser; the screenshot goes to $ARFLARE_SCREENSHOTS/report.png."""
    out = tmp_path / "report.html"
    assert main(["report", "exp2_basic_aug", "exp5_atto_mixup", "--out", str(out), "--file", str(store / "experiments.yaml")]) == 0
    # any network fetch would fail: the page must not need one
    command = [*chromium(tmp_path / "profile"), "--host-resolver-rules=MAP * ~NOTFOUND"]
    page = dom(command, out.as_uri())
    assert page.count("<img") == 5 and "Compare" in page
    pixels = screenshot(command, out.as_uri(), screenshots_dir(tmp_path) / "report.png", size="1200,2600")
    assert pixels.shape[1] == 1200 and (pixels < 128).mean() > 0.005  # text and curves were drawn
