"""How long `arflare compare` takes over a large store, against a bare `mlflow.search_runs`.

Builds (once; reused when --store already holds it) a sqlite MLflow store of N runs shaped like
arflare's: the full resolved spec as params, every val/test metric with intervals, the usual
tags, 25 experiments x configurations x 4 seeds. Then times, alternately and `--repeat` times,
(a) `mlflow.search_runs` of that experiment (a DataFrame of every run, the baseline) and
(b) the whole `arflare compare` command body (store read, grouping, ranking, rendering).

    python scripts/bench_compare.py --runs 1000 --store /tmp/bench_compare
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arflare.metrics import METRIC_NAMES  # noqa: E402
from arflare.spec import RunSpec  # noqa: E402
from registry.tracking import Tracker  # noqa: E402


def populate(folder: Path, runs: int) -> None:
    import numpy as np

    tracker = Tracker(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}", experiment="arflare",
                      artifact_location=(folder / "mlruns" / "artifacts").as_uri())
    rng = np.random.default_rng(0)
    base = RunSpec().model_dump(mode="json")
    for i in range(runs):
        experiment, config, seed = f"exp{i // 40:02d}", (i // 4) % 10, i % 4
        spec = {**base, "train": {**base["train"], "seed": seed, "lr": 1e-4 * (1 + config)}}
        tags = {"arflare.experiment": experiment, "arflare.group": experiment, "arflare.data_fingerprint": "fp",
                "arflare.git_commit": "abc", "arflare.git_dirty": "false", "arflare.spec_hash": f"{i:016x}"}
        metrics = {}
        for split in ("val", "test"):
            for name in METRIC_NAMES:
                metrics[f"{split}/{name}"] = float(rng.random())
            for name in ("tss", "hss", "auc", "pr_auc", "bss"):
                metrics[f"{split}/{name}_lo"], metrics[f"{split}/{name}_hi"] = 0.1, 0.9
        metrics.update({f"best/val_{name}": metrics[f"val/{name}"] for name in METRIC_NAMES})
        with tracker.start_run(run_name=f"{experiment}/seed={seed}", tags=tags, params=spec) as run:
            run.log_metrics(metrics)
        if i % 100 == 99:
            print(f"  {i + 1} runs written", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--store", type=Path, default=Path("/tmp/arflare_bench_compare"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    db = args.store / "mlruns" / "mlflow.db"
    marker = args.store / f".runs-{args.runs}"
    if not marker.exists():
        shutil.rmtree(args.store, ignore_errors=True)
        args.store.mkdir(parents=True)
        print(f"writing {args.runs} runs into {db} (once)", file=sys.stderr)
        populate(args.store, args.runs)
        marker.touch()
    (args.store / "experiments.yaml").write_text("project: arflare\nexperiments:\n  exp00: {description: bench}\n")

    import mlflow

    from arflare.cli import main as arflare

    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.get_experiment_by_name("arflare").experiment_id

    def bare() -> int:
        return len(mlflow.search_runs(experiment_ids=[experiment_id], max_results=100_000))

    def compare() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert arflare(["compare", "--file", str(args.store / "experiments.yaml")]) == 0
        return out.getvalue()

    assert bare() == args.runs
    print(compare().splitlines()[2])  # warm both paths (imports, sqlite pages) before timing
    times: dict[str, list[float]] = {"bare mlflow.search_runs": [], "arflare compare": []}
    for _ in range(args.repeat):
        for name, func in (("bare mlflow.search_runs", bare), ("arflare compare", compare)):
            started = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - started)
    baseline = statistics.median(times["bare mlflow.search_runs"])
    print(f"{args.runs} runs, median of {args.repeat}")
    for name, values in times.items():
        print(f"  {name:<24} {statistics.median(values):6.2f} s   x {statistics.median(values) / baseline:.2f}")


if __name__ == "__main__":
    main()
