"""compare / compare --paired / diff through the CLI, on runs written straight into a sqlite store.

No training here: runs are logged with the tags, params, metrics and prediction files a real run
leaves, so these tests are fast and exercise the same read path as a user's store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arflare.cli import main
from arflare.comparing import conventions, not_measurable, run_notes, split_column
from registry.compare import compare_runs
from registry.loader import load_registry
from registry.tracking import RunRecord, Tracker, flatten_params

REPO = Path(__file__).resolve().parents[2]


def predictions(seed: int, *, n_ars: int = 10, per_ar: int = 30) -> pd.DataFrame:
    """The same frames and labels for every seed (one test set); the scores depend on the seed."""
    ars = np.repeat([f"{1000 + i}" for i in range(n_ars)], per_ar)
    labels = (np.random.default_rng(99).random(ars.size) < 0.3).astype(int)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"key": [f"{a}_{i}" for i, a in enumerate(ars)], "ar": ars,
                         "timestamp": pd.Timestamp("2011-01-01"), "label": labels, "reg_label": "C1.0",
                         "score": np.clip(0.3 * labels + 0.7 * rng.random(ars.size), 0, 1)})


class Store:
    def __init__(self, folder: Path) -> None:
        self.file = folder / "experiments.yaml"
        shutil.copy(REPO / "experiments.yaml", self.file)
        self.tracker = Tracker(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}", experiment="arflare",
                               artifact_location=(folder / "mlruns" / "artifacts").as_uri())
        self.folder = folder

    def add(self, experiment: str, *, val: float, test: float, status: str = "FINISHED", seed: int = 0,
            params: dict | None = None, fingerprint: str = "fp1", preds: pd.DataFrame | None = None,
            tags: dict | None = None, extra: dict | None = None) -> str:
        spec = {"train": {"seed": seed, "lr": 1e-4}, "data": {"root": f"/data/{experiment}"}, **(params or {})}
        all_tags = {"arflare.experiment": experiment, "arflare.data_fingerprint": fingerprint,
                    "arflare.git_commit": "abc123", "arflare.git_dirty": "false", **(tags or {})}
        metrics = {"best/val_tss": val, "test/tss": test, "test/tss_lo": test - 0.2, "test/tss_hi": test + 0.2,
                   "test/tn": 500, "test/fp": 20, "test/tp": 30, "test/fn": 10, "test/threshold": 0.5,
                   "test/tpr_at_fpr_1e-3": 0.1, **(extra or {})}
        try:
            with self.tracker.start_run(run_name=f"{experiment}/seed={seed}", tags=all_tags, params=spec) as run:
                run.log_metrics(metrics)
                if preds is not None:
                    path = self.folder / "test.parquet"
                    preds.to_parquet(path, index=False)
                    run.log_artifact(path, "predictions")
                if status == "FAILED":
                    raise RuntimeError("boom")
        except RuntimeError:
            pass
        return run.run_id

    def cli(self, *args: str) -> int:
        return main([*args, "--file", str(self.file)])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        s = Store(tmp_path_factory.mktemp("store"))
        # val ranks exp1 first although exp2 has the better test score: val must decide.
        s.ids = {"exp1": s.add("exp1_basic_reg", val=0.8, test=0.2, preds=predictions(0)),
                 "exp2": s.add("exp2_basic_aug", val=0.5, test=0.9, preds=predictions(1)),
                 "failed": s.add("exp3_flow_reg", val=0.99, test=0.99, status="FAILED"),
                 "other_data": s.add("exp4_flow_aug", val=0.1, test=0.1, fingerprint="fp2", preds=predictions(2),
                                     tags={"arflare.git_dirty": "true"},
                                     extra={"test/tp": 0, "test/fp": 0, "test/tn": 90, "test/fn": 30})}
        yield s


def test_compare_ranks_on_val_by_default_and_shows_test_beside(store, capsys):
    assert store.cli("compare", "--format", "json") == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [row["experiment"] for row in rows] == ["exp1_basic_reg", "exp2_basic_aug", "exp4_flow_aug"]
    assert rows[0]["val_tss"] == 0.8 and rows[0]["test_tss"] == 0.2 and rows[0]["test_tss_lo"] == pytest.approx(0.0)
    assert "not ranked: 1 FAILED" in captured.err and "ranked by val TSS" in captured.err


def test_compare_table_flags_split_na_degenerate_and_dirty(store, capsys):
    assert store.cli("compare", "--metric", "TPR@FPR=1E-3", "--split", "test") == 0  # metric names in any case
    text = capsys.readouterr().out
    assert "val TPR@FPR=1e-3" in text.splitlines()[0] and "test TPR@FPR=1e-3" in text.splitlines()[0]
    exp4 = next(line for line in text.splitlines() if "exp4_flow_aug" in line)
    assert "n/a" in exp4 and "dirty" in exp4 and "no-pos:test" in exp4
    assert "exp4" not in next(line for line in text.splitlines() if "exp1_basic_reg" in line)
    assert max(len(line) for line in text.splitlines() if not line.startswith(("n/a", "no-pos", "dirty", "ranked"))) <= 100


def test_compare_on_test_says_how_many_configurations_were_compared(store, capsys):
    assert store.cli("compare", "--split", "test") == 0
    text = capsys.readouterr().out
    assert text.splitlines()[2].split()[1] == "exp2_basic_aug"
    assert "ranked on test: 3 configurations were compared on the test set" in text and "optimistic" in text


def test_paired_run_with_itself_is_zero_with_p_one(store, capsys):
    run = store.ids["exp1"]
    assert store.cli("compare", "--paired", run[:8], run, "--format", "json", "--resamples", "200") == 0
    found = json.loads(capsys.readouterr().out)
    assert found["n_ars"] == 10 and found["n_frames"] == 300
    for row in found["rows"]:
        assert row["difference"] == 0 and row["p_value"] == 1


def test_paired_by_experiment_name_and_across_data_fingerprints(store, capsys):
    assert store.cli("compare", "--paired", "exp1_basic_reg", "exp2_basic_aug", "--resamples", "200") == 0
    text = capsys.readouterr().out
    assert "best of exp1_basic_reg by val TSS" in text and "test AUC" in text and "A - B" in text
    # exp4 read other data (a flow run on the same magnetograms), but its test frames and labels are exp1's
    assert store.cli("compare", "--paired", "exp1_basic_reg", "exp4_flow_aug", "--resamples", "200") == 0
    assert "note: the runs read different data (fingerprints fp1 and fp2" in capsys.readouterr().out
    assert store.cli("compare", "--paired", "exp1_basic_reg", "nope") == 2
    assert "neither a run id" in capsys.readouterr().err


def test_paired_refuses_runs_tested_on_other_frames(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = Store(tmp_path)
    s.add("exp1_basic_reg", val=0.5, test=0.5, preds=predictions(0))
    s.add("exp2_basic_aug", val=0.5, test=0.5, fingerprint="fp2", preds=predictions(1, n_ars=8))
    assert s.cli("compare", "--paired", "exp1_basic_reg", "exp2_basic_aug") == 2
    err = capsys.readouterr().err
    assert "do not hold the same frames with the same labels (300 vs 240 frames" in err and "fp1 and fp2" in err


def test_diff_shows_differing_keys_fingerprint_commit_and_metrics(store, capsys):
    assert store.cli("diff", "exp1_basic_reg", "exp4_flow_aug") == 0
    text = capsys.readouterr().out
    assert "resolved spec: identical" in text and "location/speed only" in text and "data.root" in text
    assert "fp1" in text and "fp2" in text and "(dirty)" in text and "test TSS" in text
    assert store.cli("diff", "exp1_basic_reg", "exp2_basic_aug", "--profile", "smoke") == 0
    text = capsys.readouterr().out
    assert "registry exp1_basic_reg --profile smoke" in text and "data.augment" in text


def test_compare_and_diff_do_not_import_torch(store):
    code = ("import sys; from arflare.cli import main; "
            f"assert main(['compare', '--file', {str(store.file)!r}]) == 0; "
            f"assert main(['diff', 'exp1_basic_reg', 'exp2_basic_aug', '--file', {str(store.file)!r}]) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_the_readme_grid_example_gives_two_groups(tmp_path):
    registry_file = tmp_path / "experiments.yaml"
    registry_file.write_text("project: p\nexperiments:\n  exp2_basic_aug:\n    description: grid\n"
                             "    seeds: [0, 1]\n    grid: {train.lr: [1.0e-4, 3.0e-4]}\n")
    from arflare.spec import RunSpec

    runs = load_registry(registry_file, RunSpec, seed_key="train.seed").expand("exp2_basic_aug")
    assert len(runs) == 4
    records = [RunRecord(run_id=f"{i:032x}", run_name=run.name, status="FINISHED", start_time=i, end_time=None,
                         tags={"arflare.experiment": run.experiment, "arflare.group": run.group},
                         params=flatten_params(run.spec.model_dump(mode="json")),
                         metrics={"best/val_tss": 0.6 if run.spec.train.lr == 1e-4 else 0.2}, artifact_uri="x")
               for i, run in enumerate(runs)]
    comparison = compare_runs(records, rank_by=split_column("val", "tss"), conventions=conventions(),
                              run_notes=run_notes, not_measurable=not_measurable)
    heads = [row for row in comparison.rows if row["rank"] is not None]
    assert [(row["group"], row["n_runs"], row["val_tss"]) for row in heads] == [
        ("exp2_basic_aug [train.lr=1e-4]", 2, 0.6), ("exp2_basic_aug [train.lr=3e-4]", 2, 0.2)]
