"""``arflare``: run, inspect and compare the experiments declared in experiments.yaml.

Parsing happens here and only here: the registry file, profiles and ``--set`` overrides
become frozen ``RunSpec`` objects before anything else runs. Heavy modules (torch, mlflow,
optuna) are imported inside the commands that need them, so ``--help``, ``list``, ``show``
and ``validate`` answer in well under a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from registry.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_FILE = "experiments.yaml"

_DESCRIPTION = """\
arflare: an experiment registry for solar-flare classifiers.

Every experiment is declared once in experiments.yaml, validated, launched by name and
tracked in MLflow (sqlite:///mlruns/mlflow.db beside experiments.yaml, or $MLFLOW_TRACKING_URI).

typical session:
  arflare list                              what is declared, how many runs each has
  arflare show exp2_basic_aug               the resolved spec, every default filled in
  arflare run exp2_basic_aug --profile smoke
  arflare compare --metric tss              rank configurations by val TSS, test TSS with 95% CI beside
  arflare ui                                browse runs, plots and predictions in MLflow
  arflare report exp2_basic_aug             one HTML page to share: table, curves, seed spread
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``arflare`` script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synth"]:  # synth owns its flags (and its --help); it never needs the registry
        from arflare.data.synth import main as synth_main

        return synth_main(argv[1:])
    parser = _build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # `run --nproc N` starts N processes with the same command line
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return guarded(lambda: args.handler(args))


def guarded(command: Callable[[], int]) -> int:
    """Run a command's body as every ``arflare`` command runs; return its exit code.

    A scheduler's SIGTERM ends runs as KILLED, like Ctrl-C (130); bad input prints what and how
    to fix it, without a traceback (2). The ranks of a submitted DDP job run under it too.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return command()
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class _VersionAction(argparse.Action):
    """``--version``: read from package metadata only when asked (no torch import, no start-up cost)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from arflare import versions

        found = versions()
        stack = ", ".join(f"{name} {version}" for name, version in found.items() if name != "arflare")
        print(f"arflare {found['arflare']} ({stack})")
        parser.exit()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    from arflare.metrics import compare_choices

    parser = argparse.ArgumentParser(prog="arflare", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="print arflare's version and those of torch, timm, mlflow, optuna, pydantic, numpy")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", "-f", default=DEFAULT_FILE, metavar="FILE",
                        help=f"registry file to use (default: ./{DEFAULT_FILE})")
    resolve = argparse.ArgumentParser(add_help=False)
    resolve.add_argument("--profile", "-p", metavar="P", help="apply a named profile on top (e.g. smoke, demo)")
    resolve.add_argument("--set", "-s", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                         help="override one spec value, typed by the schema; repeatable (--set train.lr=3e-4)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler, help_text: str, example: str, parents=(common,)):
        cmd = sub.add_parser(name, parents=list(parents), help=help_text, description=f"{help_text}\n\nexample:\n  {example}",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.set_defaults(handler=handler)
        return cmd

    add("list", _cmd_list, "list experiments: name, extends, description, runs so far", "arflare list")
    cmd = add("show", _cmd_show, "print an experiment's resolved spec as YAML", "arflare show exp2_basic_aug --profile smoke", (common, resolve))
    cmd.add_argument("name", metavar="NAME", help="an experiment from the registry")
    cmd = add("mine", _cmd_mine, "score a split with a run's best checkpoint and record its false positives (hard negatives) as a tracked run",
              "arflare mine exp1_basic_reg --split train --min-score 0.9", (common, resolve))
    cmd.add_argument("source", metavar="SOURCE", help="a run id, or an experiment name (= its best FINISHED run of --profile by its val monitor)")
    cmd.add_argument("--split", choices=("train", "val", "test"), default="train", help="split to score (default train)")
    rule = cmd.add_mutually_exclusive_group()
    rule.add_argument("--min-score", type=float, metavar="S", help="keep negatives scoring >= S (default: the source run's threshold)")
    rule.add_argument("--top-fraction", type=float, metavar="F", help="keep the fraction F of negatives with the highest scores")
    cmd = add("validate", _cmd_validate, "check a registry file and report every problem at once", "arflare validate experiments.yaml")
    cmd.add_argument("path", nargs="?", metavar="FILE", help="file to validate (default: --file)")
    cmd = add("run", _cmd_run, "train and track one or more experiments (seeds x grid expand into runs)",
              "arflare run exp2_basic_aug --profile smoke --set train.lr=3e-4", (common, resolve))
    cmd.add_argument("names", nargs="+", metavar="NAME", help="experiments from the registry (arflare list shows them)")
    cmd.add_argument("--force", action="store_true", help="run even when an identical spec+data already has a FINISHED (or live RUNNING) run")
    cmd.add_argument("--restart", action="store_true", help="start a fresh run instead of resuming a KILLED or stale one")
    cmd.add_argument("--dry-run", action="store_true", help="validate and list the runs that would start; train nothing")
    cmd.add_argument("--checkpoint-fp16", action="store_true", help="log best.pt in half precision (half the size)")
    cmd.add_argument("--log-last-checkpoint", action="store_true",
                     help="also log the full-state last.pt (optimizer included); by default it stays local until the run ends")
    cmd.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                     help="train each run data-parallel in N processes on this machine through torchrun "
                          "(one per GPU; gloo on CPU); train.batch_size stays the global batch (default 1)")
    cmd.add_argument("--allow-failed-gates", action="store_true",
                     help="train even when a preflight gate FAILs (arflare check); the run is tagged with the failed gates")
    cmd = add("check", _cmd_check, "run the preflight gates of an experiment's data and inputs: PASS/WARN/FAIL table, "
              "recorded as a check run; exit 1 when a gate FAILs", "arflare check exp1_basic_reg --profile smoke",
              (common, resolve))
    cmd.add_argument("name", metavar="NAME", help="an experiment from the registry")
    cmd = add("runs", _cmd_runs, "list tracked runs, newest first: status (STALE when a RUNNING run went silent), age, heartbeat",
              "arflare runs --mark-stale-killed")
    cmd.add_argument("--experiment", "-e", nargs="+", metavar="NAME", help="only these experiments")
    cmd.add_argument("--stale-after", type=float, metavar="SECONDS",
                     help="silence after which a RUNNING run is stale (default $ARFLARE_STALE_AFTER or 300)")
    cmd.add_argument("--mark-stale-killed", action="store_true", help="mark every stale run KILLED (arflare run then resumes it)")
    cmd.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="show the newest N runs (default 50)")
    cmd = add("compare", _cmd_compare, "rank configurations on val, with test scores and AR-bootstrap intervals",
              "arflare compare --metric tss --top 10\n  arflare compare --paired exp1_basic_reg exp2_basic_aug")
    cmd.add_argument("--metric", default="tss", help=f"{'|'.join(compare_choices())} or any logged metric name; "
                     "case-insensitive (default tss)")
    cmd.add_argument("--split", choices=("val", "test"), default="val",
                     help="split that ranks (default val: selecting on test makes the reported test score optimistic)")
    cmd.add_argument("--experiment", "-e", nargs="+", metavar="NAME", help="only these experiments")
    cmd.add_argument("--top", type=_positive_int, metavar="N", help="only the best N configurations")
    cmd.add_argument("--format", choices=("table", "csv", "json", "markdown", "latex"), default="table",
                     help="table (fits 100 columns), csv/json (machine names), markdown, latex (booktabs)")
    cmd.add_argument("--wide", action="store_true", help="table: every column, labels never shortened")
    cmd.add_argument("--all", dest="show_all", action="store_true", help="also list runs that are not ranked (failed, killed, pruned)")
    cmd.add_argument("--paired", nargs=2, metavar=("A", "B"),
                     help="difference A - B on the same test set with a paired AR-bootstrap interval and p-value "
                          "(run ids, or experiment names = their best run by the val metric)")
    cmd.add_argument("--resamples", type=_positive_int, default=1000, metavar="N", help="--paired: bootstrap resamples (default 1000)")
    cmd = add("diff", _cmd_diff, "why two runs differ: resolved-spec keys, data fingerprint, git commit, headline metrics",
              "arflare diff exp1_basic_reg exp2_basic_aug\n  arflare diff 3f2a9c1b exp2_basic_aug --profile smoke")
    cmd.add_argument("a", metavar="A", help="a run id (or its first 8+ characters) or an experiment name")
    cmd.add_argument("b", metavar="B", help="the same for the other side")
    cmd.add_argument("--profile", "-p", metavar="P",
                     help="resolve experiment names from the registry with this profile instead of taking their best run")
    cmd.add_argument("--metric", default="tss", help="val metric that picks an experiment's best run (default tss)")
    cmd = add("ui", _cmd_ui, "serve the MLflow UI of this store on 127.0.0.1 and open its runs table", "arflare ui --port 5000")
    cmd.add_argument("--port", type=int, default=5000)
    cmd.add_argument("--verbose", "-v", action="store_true", help="show the server's output, access logs included")
    cmd.add_argument("--no-browser", action="store_true", help="print the URL only, open no browser")
    cmd = add("report", _cmd_report, "write one self-contained HTML page comparing experiments (no network needed to view)",
              "arflare report exp2_basic_aug exp5_atto_mixup --out report.html")
    cmd.add_argument("names", nargs="+", metavar="NAME", help="experiments to compare (arflare list shows them)")
    cmd.add_argument("--out", "-o", type=Path, default=Path("report.html"), metavar="FILE", help="default: report.html")
    cmd.add_argument("--metric", default="tss", help="ranking metric, as for compare (default tss)")
    cmd.add_argument("--split", choices=("val", "test"), default="val",
                     help="split that ranks (default val, as compare; test ranks on test and the page says so)")
    add("synth", None, "write the synthetic AR-flares data set (same format as the real shards; arflare synth --help)",
        "arflare synth --out data/synthetic --ars 60 --size 64 --seed 0", parents=())
    cmd = add("index", _cmd_index, "index shards (cached outside the data root) and print per-split statistics",
              "arflare index data/synthetic/magnetograms --flow-root data/synthetic/flow", parents=())
    cmd.add_argument("root", type=Path)
    cmd.add_argument("--flow-root", type=Path)
    cmd.add_argument("--format", choices=("table", "json"), default="table")
    cmd.add_argument("--strict", action="store_true", help="fail on the first corrupt sample")
    cmd = add("sweep", _cmd_sweep, "Optuna search over an experiment's search: block, trials tracked as child runs",
              "arflare sweep sweep_reg_mixup --trials 20 --workers 2", (common, resolve))
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("--trials", type=_positive_int, metavar="N", help="total trials (default: search.n_trials); re-running resumes")
    cmd.add_argument("--workers", type=_positive_int, default=1, metavar="K", help="local worker processes on one study")
    cmd.add_argument("--storage", metavar="URL",
                     help="Optuna storage (default: a journal file beside the tracking store); postgresql://USER@HOST/DB "
                          "lets sweep commands on several machines share one study (pip install 'arflare[server]')")
    cmd.add_argument("--heartbeat-interval", type=_positive_int, metavar="S",
                     help="RDB storage: seconds between a running trial's heartbeats (default 60)")
    cmd.add_argument("--grace-period", type=_positive_int, metavar="S",
                     help="RDB storage: a trial silent this long is failed and queued again (default 180)")
    cmd.add_argument("--best", action="store_true", help="print the best trial and the command that reproduces it")
    cmd.add_argument("--allow-failed-gates", action="store_true",
                     help="search even when a preflight gate of the base FAILs (arflare check); the parent and trials are tagged")
    _add_submit(add, common, resolve)
    return parser


_SUBMIT_EPILOG = """what it sends:
  without --sweep   one job per run the experiment expands to (seeds x grid; --seeds replaces
                    the seed list), submitted as one SLURM job array; each job trains its run
                    exactly as `arflare run` would (skip if FINISHED, resume if KILLED)
  with --sweep      K jobs, each one `arflare sweep` worker on the same Optuna study and the
                    same parent MLflow run; on a cluster --storage postgresql://... is required

on the cluster:
  jobs inherit this shell's environment: set MLFLOW_TRACKING_URI to the team server first
  (a sqlite store on a network file system is not safe for many nodes). Each job's id is the
  tag arflare.job_id of the run it trains. submitit's logs and pickles go to
  mlruns/submitit/ beside experiments.yaml.

data-parallel jobs (--nproc N):
  each job is one SLURM task on one node that starts N DDP processes of its run through
  torchrun, as `arflare run NAME --nproc N` does (rank 0 tracks the run and writes the
  checkpoints; the run is tagged arflare.world_size=N). Ask for one GPU per process
  (--gpus N) or none (--gpus 0: N processes on CPU cores, gloo); other --gpus values are
  refused. Without --cpus the job asks for N x (1 + data.num_workers) cores. Not with --sweep.

preemption and time limits:
  submitit asks SLURM for a warning signal before the kill; the job then ends its run KILLED
  (its resume state kept in mlruns/local/<run id>/, which must be on a shared file system)
  and requeues itself; the requeued job reopens the same MLflow run and continues after the
  last completed epoch. With --nproc, torchrun stops the DDP processes with SIGTERM as the
  job requeues: the run still ends KILLED and resumes. A sweep worker's interrupted trial
  does not count towards the total.

--local runs the same jobs on this machine through submitit's LocalExecutor and waits for
them (what the tests use; a quick check before a cluster submission).

examples:
  arflare submit exp2_basic_aug --seeds 0 1 2 --slurm-partition gpu --gpus 1 --time 720
  arflare submit exp2_basic_aug --slurm-partition gpu --gpus 4 --nproc 4   # one run on 4 GPUs
  arflare submit sweep_reg_mixup --sweep --workers 8 --storage postgresql://arflare@db.internal/optuna
  arflare submit exp2_basic_aug --profile smoke --local
"""


def _add_submit(add, common, resolve) -> None:
    cmd = add("submit", _cmd_submit, "send an experiment's runs (or K sweep workers) to SLURM through submitit",
              "arflare submit exp2_basic_aug --seeds 0 1 2 --slurm-partition gpu --gpus 1", (common, resolve))
    cmd.epilog = _SUBMIT_EPILOG
    cmd.add_argument("name", metavar="NAME", help="an experiment from the registry")
    cmd.add_argument("--seeds", nargs="+", type=int, metavar="S", help="train these seeds (replaces the experiment's seeds)")
    cmd.add_argument("--sweep", action="store_true", help="submit sweep workers on the experiment's search: block")
    cmd.add_argument("--workers", type=_positive_int, default=1, metavar="K", help="--sweep: number of worker jobs (default 1)")
    cmd.add_argument("--trials", type=_positive_int, metavar="N", help="--sweep: total trials (default: search.n_trials)")
    cmd.add_argument("--storage", metavar="URL", help="--sweep: the Optuna storage every worker shares (postgresql://...)")
    cmd.add_argument("--slurm-partition", metavar="P", help="SLURM partition (default: the cluster's)")
    cmd.add_argument("--gpus", type=_count, default=0, metavar="G",
                     help="GPUs per job: 0, or one per process (--nproc's N) (default 0)")
    cmd.add_argument("--cpus", type=_positive_int, metavar="C", help="CPU cores per job (default: the cluster's)")
    cmd.add_argument("--time", type=_positive_int, default=240, metavar="MIN", help="wall-clock limit per job in minutes (default 240)")
    cmd.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                     help="train each run in N DDP processes on its job's node, as `arflare run --nproc N` "
                          "(one per GPU with --gpus N; gloo on CPU cores with --gpus 0) (default 1)")
    cmd.add_argument("--local", action="store_true", help="run the jobs on this machine (submitit's LocalExecutor) and wait")



def _load(args):
    from arflare.commands import open_registry

    return open_registry(getattr(args, "path", None) or args.file)


def _cmd_list(args) -> int:
    from arflare.commands import list_experiments

    print(list_experiments(_load(args)))
    return EXIT_OK


def _cmd_show(args) -> int:
    from arflare.commands import show_experiment

    print(show_experiment(_load(args), args.name, profile=args.profile, sets=args.sets), end="")
    return EXIT_OK


def _cmd_mine(args) -> int:
    from arflare.mining import mine_command

    return mine_command(_load(args), args.source, split=args.split, min_score=args.min_score,
                        top_fraction=args.top_fraction, profile=args.profile, sets=args.sets)


def _cmd_validate(args) -> int:
    registry = _load(args)
    runs = sum(len(registry.expand(name)) for name in registry.experiments)
    print(f"{registry.path}: OK ({len(registry.experiments)} experiments, {runs} runs, profiles: {', '.join(registry.profiles) or 'none'})")
    return EXIT_OK


def _cmd_run(args) -> int:
    registry = _load(args)  # bad input fails here, before any process starts
    world = os.environ.get("WORLD_SIZE")  # set by torchrun in each of its processes
    if world is not None and args.nproc not in (1, int(world)):
        raise UserError(f"--nproc {args.nproc} inside torchrun, which started {world} processes; drop --nproc")
    if args.nproc > 1 and world is None and not args.dry_run:
        from arflare.ddp_checks import check_plans

        check_plans([run for name in args.names for run in registry.expand(name, profile=args.profile, sets=args.sets)],
                    args.nproc)
        from arflare.distributed import launch  # torch: only when training

        return launch(args.nproc, _without_nproc(args.argv))
    from arflare.checkpoints import CheckpointOptions
    from arflare.running import RunOptions, run_experiments  # torch: only when training

    options = RunOptions(force=args.force, restart=args.restart, dry_run=args.dry_run,
                         allow_failed_gates=args.allow_failed_gates,
                         checkpoints=CheckpointOptions(fp16_best=args.checkpoint_fp16, log_last=args.log_last_checkpoint))
    return run_experiments(registry, args.names, profile=args.profile, sets=args.sets, options=options)


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            out.append(arg)
    return out
def _cmd_check(args) -> int:
    registry = _load(args)
    from arflare.checking import check_experiment  # torch: the input gates build the run's datasets

    return check_experiment(registry, args.name, profile=args.profile, sets=args.sets)


def _cmd_runs(args) -> int:
    from arflare.commands import list_runs

    print(list_runs(_load(args), experiments=args.experiment, stale_after=args.stale_after,
                    mark_stale_killed=args.mark_stale_killed, limit=args.limit))
    return EXIT_OK


def _cmd_compare(args) -> int:
    from arflare.comparing import compare, compare_paired

    if args.paired:
        print(compare_paired(_load(args), *args.paired, metric=args.metric, fmt=args.format, resamples=args.resamples), end="")
        return EXIT_OK
    out, notes = compare(_load(args), metric=args.metric, split=args.split, experiments=args.experiment, top=args.top,
                         fmt=args.format, wide=args.wide, show_all=args.show_all)
    print(out, end="")
    for line in notes:
        print(line, file=sys.stderr)
    return EXIT_OK


def _cmd_diff(args) -> int:
    from arflare.diffing import diff

    print(diff(_load(args), args.a, args.b, profile=args.profile, metric=args.metric), end="")
    return EXIT_OK


def _cmd_ui(args) -> int:
    from arflare.commands import open_tracker
    from arflare.ui import serve

    registry = _load(args)
    return serve(open_tracker(registry), port=args.port, verbose=args.verbose, open_browser=not args.no_browser,
                 log_dir=registry.path.parent / "mlruns")


def _cmd_report(args) -> int:
    from arflare.report import write_report

    path = write_report(_load(args), args.names, out=args.out, metric=args.metric, split=args.split)
    print(f"wrote {path} (self-contained: open it in any browser, offline)")
    return EXIT_OK


def _cmd_index(args) -> int:
    from arflare.commands import index_report

    print(index_report(args.root, flow_root=args.flow_root, fmt=args.format, strict=args.strict))
    return EXIT_OK


def _cmd_sweep(args) -> int:
    registry = _load(args)
    from arflare.sweeping import sweep  # torch: only when training

    heartbeat = {key: value for key, value in (("interval_s", args.heartbeat_interval), ("grace_s", args.grace_period))
                 if value is not None}
    return sweep(registry, args.name, profile=args.profile, sets=args.sets, trials=args.trials,
                 workers=args.workers, storage=args.storage, best=args.best, heartbeat=heartbeat,
                 allow_failed_gates=args.allow_failed_gates)


def _cmd_submit(args) -> int:
    from arflare.submitting import Resources, submit_command

    resources = Resources(partition=args.slurm_partition, gpus=args.gpus, time_min=args.time, nproc=args.nproc,
                          cpus=args.cpus)
    return submit_command(_load(args), args.name, profile=args.profile, sets=args.sets, seeds=args.seeds,
                          sweep_workers=args.workers if args.sweep else None, storage=args.storage, trials=args.trials,
                          resources=resources, local=args.local)


if __name__ == "__main__":
    sys.exit(main())
