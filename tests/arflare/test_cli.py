"""End to end through the CLI: runs on tiny synthetic data, tracked in a real sqlite MLflow store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from arflare import metrics as skill
from arflare.cli import main
from arflare.data.synth import generate

REPO = Path(__file__).resolve().parents[2]
SEED_EXPERIMENTS = ("exp1_basic_reg", "exp2_basic_aug", "exp3_flow_reg", "exp4_flow_aug", "exp5_atto_mixup")


class Workspace:
    """A copy of the shipped experiments.yaml in a temp folder, pointed at tiny synthetic data."""

    def __init__(self, folder: Path, data: Path) -> None:
        self.folder, self.data = folder, data
        self.file = folder / "experiments.yaml"
        shutil.copy(REPO / "experiments.yaml", self.file)

    @property
    def data_sets(self) -> list[str]:
        return ["--set", f"data.root={self.data / 'magnetograms'}", "--set", f"data.flow_root={self.data / 'flow'}",
                "--set", "data.generate_if_missing=false"]

    def arflare(self, *args: str) -> int:
        return main([*args, "--file", str(self.file)])

    def run(self, name: str, *extra: str) -> int:
        return self.arflare("run", name, "--profile", "smoke", *self.data_sets, *extra)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=f"sqlite:///{self.folder / 'mlruns' / 'mlflow.db'}")

    def runs(self, experiment: str | None = None):
        exp = self.client.get_experiment_by_name("arflare")
        if exp is None:
            return []
        runs = self.client.search_runs([exp.experiment_id], max_results=1000)
        return [r for r in runs if experiment is None or r.data.tags.get("arflare.experiment") == experiment]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, ars=8, size=24, hours=10, seed=0, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory, synth) -> Workspace:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield Workspace(tmp_path_factory.mktemp("ws"), synth)


@pytest.fixture(scope="module")
def finished(ws):
    """One finished smoke run of exp2_basic_aug, shared by the tests that read it."""
    assert ws.run("exp2_basic_aug") == 0
    (run,) = ws.runs("exp2_basic_aug")
    return run


def test_smoke_run_writes_params_metrics_tags_and_artifacts(ws, finished):
    assert finished.info.status == "FINISHED"
    assert finished.info.run_name == "exp2_basic_aug"
    params, tags = finished.data.params, finished.data.tags
    assert params["train.lr"] == str(5e-4) or float(params["train.lr"]) > 0
    assert params["data.image_size"] == "32" and params["model.backbone"] == "convnext_tiny"
    assert params["data.augment.hflip"] == "True"
    for tag in ("arflare.experiment", "arflare.group", "arflare.spec_hash", "arflare.data_fingerprint", "arflare.git_commit", "arflare.git_dirty"):
        assert tags[tag], tag
    metrics = finished.data.metrics
    for name in ("loss", "auc", "pr_auc", "brier", "bss", "tss", "hss", "precision", "recall", "f1", "accuracy",
                 "threshold", "tpr_at_fpr_1e-4", "tpr_at_fpr_1e-3", "tpr_at_fpr_1e-2", "fpr_at_tpr_0.9"):
        assert f"test/{name}" in metrics, name
        assert f"val/{name}" in metrics, name
    for split in ("val", "test"):  # AR-bootstrap intervals, logged at the end of every run
        point = metrics["best/val_tss" if split == "val" else "test/tss"]  # the best checkpoint's score
        assert metrics[f"{split}/tss_lo"] <= point <= metrics[f"{split}/tss_hi"]
    history = ws.client.get_metric_history(finished.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]
    files = _artifacts(ws.client, finished.info.run_id)
    for expected in ("spec.yaml", "metrics.json", "bootstrap.json", "log.txt", "predictions/val.parquet", "predictions/test.parquet",
                     "checkpoints/best.pt", "plots/roc_test.png", "plots/pr_test.png",
                     "plots/confusion_test.png", "plots/reliability_test.png", "plots/training_curves.png"):
        assert expected in files, expected
    assert "checkpoints/last.pt" not in files  # the resume state stays local and is removed when the run ends
    for split in ("val", "test"):  # after training: strata, failure grids and ECE at the val threshold
        assert {f"strata/{split}.parquet", f"strata/{split}.png", f"failures/{split}.parquet",
                f"failures/{split}.png"} <= files
    assert "test/ece" in metrics and "best/val_ece" in metrics
    check = ws.client.get_run(tags["arflare.check_run"])  # the preflight check it relied on
    assert check.data.tags["arflare.kind"] == "check" and check.data.tags["arflare.gates_status"] == tags["arflare.gates_status"]


def test_test_tss_recomputes_from_predictions_and_logged_threshold(ws, finished):
    folder = Path(ws.client.download_artifacts(finished.info.run_id, "predictions"))
    test = pd.read_parquet(folder / "test.parquet")
    assert list(test.columns) == ["key", "ar", "timestamp", "label", "reg_label", "score"]
    threshold = finished.data.metrics["test/threshold"]
    assert threshold == finished.data.metrics["val/threshold"]  # chosen on val, applied unchanged
    tp, tn, fp, fn = skill.confusion(test["label"].to_numpy(), test["score"].to_numpy() >= threshold)
    assert skill.tss(tp, tn, fp, fn) == pytest.approx(finished.data.metrics["test/tss"])


def test_best_checkpoint_reproduces_its_val_scores(ws, finished):
    from arflare.builders import build_datasets, build_model_from_spec
    from arflare.lifecycle import prepare_data
    from arflare.spec import RunSpec

    ckpt = torch.load(ws.client.download_artifacts(finished.info.run_id, "checkpoints/best.pt"), weights_only=False)
    spec = RunSpec.model_validate(ckpt["spec"])
    model = build_model_from_spec(spec)
    model.load_state_dict(ckpt["model"])
    model.eval()
    val = build_datasets(spec, prepare_data(spec, progress=False))["val"]
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])
    with torch.no_grad():
        scores = torch.sigmoid(model({"image": batch["image"]})).squeeze(1).numpy()
    logged = pd.read_parquet(Path(ws.client.download_artifacts(finished.info.run_id, "predictions")) / "val.parquet")
    assert scores == pytest.approx(logged["score"].to_numpy(), abs=1e-4)


def test_identical_run_is_skipped_unless_forced(ws, finished, capsys):
    assert ws.run("exp2_basic_aug") == 0
    assert "skip exp2_basic_aug" in capsys.readouterr().err
    assert len(ws.runs("exp2_basic_aug")) == 1
    assert ws.run("exp2_basic_aug", "--force") == 0
    assert len(ws.runs("exp2_basic_aug")) == 2


def test_nan_loss_fails_the_run_and_keeps_earlier_checkpoints_and_runs(ws, finished, monkeypatch, capsys):
    import arflare.builders as builders

    real = builders.build_loss_from_spec

    class NanAfterTwoSteps(torch.nn.Module):
        """The real loss for epoch 1's two training steps (smoke profile), NaN from epoch 2 on."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.train_calls = inner, 0

        def forward(self, logits, target):
            loss = self.inner(logits, target)
            if torch.is_grad_enabled():  # evaluation runs under no_grad
                self.train_calls += 1
                if self.train_calls > 2:
                    return loss * float("nan")
            return loss

    def build(spec):
        return NanAfterTwoSteps(real(spec))

    monkeypatch.setattr(builders, "build_loss_from_spec", build)
    assert ws.run("exp1_basic_reg", "--set", "train.epochs=2") == 1
    assert "NonFiniteLossError" in capsys.readouterr().err
    (failed,) = ws.runs("exp1_basic_reg")
    assert failed.info.status == "FAILED"
    assert "epoch 2, step 1" in failed.data.tags["arflare.error"]
    files = _artifacts(ws.client, failed.info.run_id)
    assert "traceback.txt" in files and "checkpoints/best.pt" in files
    assert ws.client.get_run(finished.info.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("name", [n for n in SEED_EXPERIMENTS if n != "exp2_basic_aug"])
def test_seed_experiments_run_end_to_end_in_smoke(ws, name):
    assert ws.run(name) == 0
    (run,) = [r for r in ws.runs(name) if r.info.status == "FINISHED"]
    assert "test/tss" in run.data.metrics and "val/auc" in run.data.metrics


def test_compare_ranks_finished_runs_on_val_and_lists_failed_runs_after_them(ws, finished, capsys):
    assert ws.arflare("compare", "--metric", "tss", "--all", "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    statuses = [row["status"] for row in rows if row["kind"] == "run"]
    assert "FAILED" in statuses and statuses[-1] == "FAILED"
    ranked = [row for row in rows if row["rank"] is not None]
    assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1)) and ranked[0] == rows[0]
    assert [row["val_tss"] for row in ranked] == sorted((row["val_tss"] for row in ranked), reverse=True)
    finished_rows = [row for row in rows if row["kind"] == "run" and row["status"] == "FINISHED"]
    assert all(row["test_tss_lo"] <= row["test_tss"] <= row["test_tss_hi"] for row in finished_rows
               if row["test_tss_lo"] is not None)  # None: a resampled test set of one class only
    for fmt, marker in (("table", "val TSS"), ("csv", ","), ("markdown", "|"), ("latex", r"\toprule")):
        assert ws.arflare("compare", "--format", fmt) == 0
        assert marker in capsys.readouterr().out
    assert ws.arflare("compare", "--metric", "nope") == 2
    assert "Unknown metric 'nope'" in capsys.readouterr().err


BAD_INPUTS = [  # (edit to the shipped file, extra args, what the message must say)
    (("drop_rate: 0.3", "drop_rate: [0.3"), (), "experiments.yaml:"),                       # YAML syntax error
    (("drop_rate: 0.3", "drop_rat: 0.3"), (), "did you mean 'drop_rate'"),                  # unknown key
    (("epochs: 20", "epochs: many"), (), "defaults.train.epochs"),                          # wrong type
    (("drop_rate: 0.3", "drop_rate: 1.5"), (), "less than 1"),                              # out of range
    (("extends: exp1_basic_reg\n    data:\n      augment", "extends: exp1_basic_regg\n    data:\n      augment"), (), "did you mean 'exp1_basic_reg'"),
    (("  exp1_basic_reg:\n", "  exp1_basic_reg:\n    extends: exp2_basic_aug\n"), (), "exp1_basic_reg -> exp2_basic_aug -> exp1_basic_reg"),
    (None, ("--set", "model.drop_path_rat=0.1"), "did you mean 'drop_path_rate'"),           # bad --set key
    (None, ("--set", "train.epochs"), "--set"),                                              # --set without '='
    (None, ("--set", "model.backbone=convnext_tinny"), "convnext_tiny"),                     # unknown timm name
]


@pytest.mark.parametrize(("edit", "extra", "message"), BAD_INPUTS)
def test_bad_input_exits_2_names_the_problem_and_creates_nothing(tmp_path, capsys, monkeypatch, edit, extra, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = tmp_path / "experiments.yaml"
    text = (REPO / "experiments.yaml").read_text()
    if edit is not None:
        assert edit[0] in text, edit[0]
        text = text.replace(edit[0], edit[1], 1)
    registry.write_text(text)
    assert main(["run", "exp2_basic_aug", *extra, "--file", str(registry)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "data").exists()


def test_missing_registry_file_says_how_to_fix_it(tmp_path, capsys):
    assert main(["list", "--file", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_inspection_commands_do_not_import_torch(ws):
    code = ("import sys; from arflare.cli import main; "
            f"[main([c, *a, '--file', {str(ws.file)!r}]) for c, a in (('list', []), ('show', ['exp2_basic_aug']), ('validate', []))]; "
            "assert 'torch' not in sys.modules, 'torch imported'; assert 'mlflow' not in sys.modules, 'mlflow imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "exp2_basic_aug" in done.stdout and "OK" in done.stdout


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_synth_then_index_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARFLARE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "set"
    assert main(["synth", "--out", str(out), "--ars", "6", "--size", "16", "--hours", "8", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "magnetograms").iterdir()) == ["test", "train", "val"]
    capsys.readouterr()
    assert main(["index", str(out / "magnetograms"), "--flow-root", str(out / "flow"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["split"] for row in report["splits"]] == ["train", "val", "test"] and report["fingerprint"]
    assert main(["index", str(tmp_path / "nowhere")]) == 2
    assert "missing" in capsys.readouterr().err
