"""What a tracked run records: every tag name, metric family and artifact path, in one place.

Writers (the lifecycle, the trainer, sweeps, reports) and readers (compare, list, runs) take
the names from here; nothing else spells them. The few tags the generic ``registry`` package
writes itself (error, heartbeat, parent, sweep bookkeeping) are defined there, because
``registry`` never imports ``arflare``, and re-exported here so this stays the one list.
This module imports neither torch nor mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.tracking import (
    TAG_BASE_HASH,
    TAG_BEST_TRIAL,
    TAG_DUPLICATE_OF,
    TAG_ERROR,
    TAG_HEARTBEAT,
    TAG_PARENT,
    TAG_STUDY,
    TAG_RETRY_OF,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)

__all__ = [
    "ARTIFACT_BEST", "ARTIFACT_LAST", "ARTIFACT_LOG", "ARTIFACT_METRICS", "ARTIFACT_SPEC", "ARTIFACT_TRACEBACK",
    "CHECKPOINTS", "DATASET_CONTEXT", "KINDS", "MLFLOW_RUN_FIELDS", "PLOTS", "PREDICTIONS", "RUN_TAGS", "RunKind", "TAG_BASE_HASH", "TAG_BEST_TRIAL",
    "TAG_CONFIG_HASH", "TAG_DATA_FINGERPRINT", "TAG_DESCRIPTION", "TAG_DUPLICATE_OF", "TAG_ERROR",
    "TAG_EXPERIMENT", "TAG_GIT_COMMIT", "TAG_LINEAGE", "TAG_MINE_RULE", "TAG_MINE_SOURCE", "TAG_MINE_SPLIT",
    "HARD_NEGATIVES", "METRIC_KEEP_RATE", "TAG_GIT_DIRTY", "TAG_GROUP", "TAG_HEARTBEAT", "TAG_KIND", "TAG_NOTE", "TAG_PARENT",
    "TAG_PROFILE", "TAG_SOURCE_COMMIT", "TAG_SOURCE_NAME", "TAG_SOURCE_TYPE", "TAG_USER", "TAG_RESUMED", "TAG_WORLD_SIZE", "TAG_SPEC_HASH", "TAG_STUDY", "TAG_RETRY_OF", "TAG_TRIAL_NUMBER", "TAG_TRIAL_STATE",
    "TAG_VERSION", "TAG_JOB_ID", "TAG_SCHEDULER", "best_val_metric", "kind", "DEFAULT_KIND", "training_kinds",
]
__all__ += ["FAILURES", "GATES", "STRATA", "TAG_CHECK_RUN", "TAG_CHECKED_EXPERIMENT", "TAG_FAILED_GATES_ALLOWED", "TAG_GATES_FAILED",
            "TAG_GATES_HASH", "TAG_GATES_STATUS"]  # preflight gates (arflare check) and after-training diagnostics
__all__ += ["ARTIFACT_FEATURES", "ARTIFACT_IMPORTANCES", "ARTIFACT_MODEL"]  # the tree kinds

# --- tags set on every run by the lifecycle
TAG_KIND = "arflare.kind"  # one of KINDS
TAG_EXPERIMENT = "arflare.experiment"
TAG_GROUP = "arflare.group"  # experiment[@profile]: what compare averages over seeds
TAG_SPEC_HASH = "arflare.spec_hash"  # identity of a run (spec + data); drives skip and resume
TAG_CONFIG_HASH = "arflare.config_hash"  # spec_hash without train.seed: runs that differ only by seed share it
TAG_DATA_FINGERPRINT = "arflare.data_fingerprint"
TAG_GIT_COMMIT = "arflare.git_commit"
TAG_GIT_DIRTY = "arflare.git_dirty"
TAG_PROFILE = "arflare.profile"
TAG_DESCRIPTION = "arflare.description"
TAG_VERSION = "arflare.version"  # importlib.metadata.version("arflare")
TAG_RESUMED = "arflare.resumed"  # how many times the run was resumed after dying
TAG_WORLD_SIZE = "arflare.world_size"  # DDP processes that trained the run (absent: one)
TAG_JOB_ID = "arflare.job_id"  # the scheduler job that trained the run (arflare submit), e.g. SLURM 4242_3
TAG_SCHEDULER = "arflare.scheduler"  # slurm | local: submitit's executor of that job
# --- MLflow's own run fields (its UI shows them as Description, Source, User), set by the lifecycle too
TAG_NOTE = "mlflow.note.content"  # the experiment's description
TAG_SOURCE_NAME = "mlflow.source.name"  # the command that made the run: "arflare run exp2"
TAG_SOURCE_TYPE = "mlflow.source.type"  # "LOCAL": a command on this machine
TAG_SOURCE_COMMIT = "mlflow.source.git.commit"
TAG_USER = "mlflow.user"
MLFLOW_RUN_FIELDS = (TAG_NOTE, TAG_SOURCE_NAME, TAG_SOURCE_TYPE, TAG_USER)
# The data a run reads, logged as an MLflow dataset input (the UI's Datasets column): named by
# its data root's folder, digest = arflare.data_fingerprint, in this context.
DATASET_CONTEXT = "training"
RUN_TAGS = (TAG_KIND, TAG_EXPERIMENT, TAG_GROUP, TAG_SPEC_HASH, TAG_CONFIG_HASH, TAG_DATA_FINGERPRINT,
            TAG_GIT_COMMIT, TAG_GIT_DIRTY, TAG_PROFILE, TAG_DESCRIPTION, TAG_VERSION, TAG_HEARTBEAT)

# --- hard-negative mining (arflare mine), and the lineage of runs built on other runs
TAG_MINE_SOURCE = "arflare.mine.source"  # the run whose best checkpoint scored the split
TAG_MINE_SPLIT = "arflare.mine.split"
TAG_MINE_RULE = "arflare.mine.rule"  # score>=S, top=F, or threshold (the source run's own)
# JSON (arflare.lineage.lineage_tags): the field naming the sources, sources (name -> run id), details
# (hard negatives: mine runs, table digest, rows); on hard-negative runs and hybrids alike
TAG_LINEAGE = "arflare.lineage"

# --- preflight gates: a check run (kind check) and the training runs that relied on it
TAG_GATES_HASH = "arflare.gates_hash"  # identity of a check: data fingerprint + gates: section + input pipeline
TAG_GATES_STATUS = "arflare.gates_status"  # PASS, WARN or FAIL (worst gate); on check runs and the runs they gate
TAG_GATES_FAILED = "arflare.gates_failed"  # comma-separated names of the gates that FAILed ("" when none)
TAG_CHECK_RUN = "arflare.check_run"  # on a training run: the check run it relied on
# a check names its experiment here, not under arflare.experiment: it is not a result of that experiment
# (arflare list, compare -e and the run counts leave it out)
TAG_CHECKED_EXPERIMENT = "arflare.checked_experiment"
TAG_FAILED_GATES_ALLOWED = "arflare.failed_gates_allowed"  # on a training run started with --allow-failed-gates

# --- artifact paths inside a run
ARTIFACT_SPEC = "spec.yaml"
ARTIFACT_METRICS = "metrics.json"
ARTIFACT_LOG = "log.txt"
ARTIFACT_TRACEBACK = "traceback.txt"  # written by registry.tracking when a run fails
CHECKPOINTS = "checkpoints"
ARTIFACT_BEST = f"{CHECKPOINTS}/best.pt"  # weights only (fp32, or fp16 with --checkpoint-fp16)
ARTIFACT_LAST = f"{CHECKPOINTS}/last.pt"  # full training state; logged only with --log-last-checkpoint
PREDICTIONS = "predictions"  # {val,test}.parquet
PLOTS = "plots"
HARD_NEGATIVES = "hard_negatives"  # a mine run's hard_negatives.parquet
GATES = "gates"  # a check run's report.json, report.md and figures (samples.png)
STRATA = "strata"  # {val,test}.parquet and .png: counts and rates per stratum at the val threshold
FAILURES = "failures"  # {val,test}.parquet and .png: the most confident false positives and missed flares
# --- extra artifacts of the tree kinds (model.kind physics / hybrid)
ARTIFACT_MODEL = "model/gbm.joblib"  # the fitted classifier of the best round
ARTIFACT_FEATURES = "features.json"  # digest, row count and columns of the feature table
ARTIFACT_IMPORTANCES = "importances_val.csv"  # permutation importances on validation

# --- run-level metrics logged once at the end (beside best_epoch and threshold)
# The odds factor q of the training mix (true odds = model odds x q): what {split}/brier, bss, the
# reliability figures and the bootstrap corrected the probabilities with. Absent: no correction.
METRIC_KEEP_RATE = "keep_rate"


def best_val_metric(name: str) -> str:
    """The best checkpoint's validation score, logged once at the end: ``best/val_tss``.

    The per-epoch history stays under ``val/<name>``; this name never collides with it.
    """
    return f"best/val_{name}"


@dataclass(frozen=True)
class RunKind:
    """A kind of tracked run (the ``arflare.kind`` tag).

    Attributes:
        name: Tag value.
        command: The arflare command that makes runs of this kind (the run's MLflow source).
        resumable: Whether ``arflare run`` may resume a dead run of this kind in place.
        trains: Whether a run of this kind trains a model of its experiment (``arflare list``
            counts only these as the experiment's runs).
        experiment_tag: The tag that names the run's experiment (``arflare.experiment`` for its results).
        description: One line for ``arflare runs`` and the README.
    """

    name: str
    command: str
    resumable: bool
    trains: bool
    description: str
    experiment_tag: str = TAG_EXPERIMENT


# Adding a kind is one row here; the lifecycle reads nothing else about it.
KINDS: dict[str, RunKind] = {kind.name: kind for kind in (
    RunKind("train", command="run", resumable=True, trains=True, description="arflare run: one training run of an experiment"),
    RunKind("trial", command="sweep", resumable=False, trains=True, description="arflare sweep: one Optuna trial, a child of the study's run"),
    RunKind("sweep", command="sweep", resumable=False, trains=False, description="arflare sweep: the parent run of one Optuna study"),
    RunKind("mine", command="mine", resumable=False, trains=False, description="arflare mine: a source run's hard negatives on one split (reused, not recomputed)"),
    RunKind("check", command="check", resumable=False, trains=False, experiment_tag=TAG_CHECKED_EXPERIMENT,
            description="arflare check (and before arflare run): the preflight gates of one data set and input pipeline (reused by arflare run)"),
)}
DEFAULT_KIND = "train"  # what a run without the arflare.kind tag (older than it) is


def training_kinds() -> tuple[str | None, ...]:
    """Kind tag values of runs that train a model; None stands for runs older than the tag."""
    return (*(k.name for k in KINDS.values() if k.trains), *((None,) if KINDS[DEFAULT_KIND].trains else ()))


def kind(name: str) -> RunKind:
    """The run kind called ``name``; unknown names list the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown run kind {name!r}; known: {', '.join(KINDS)}") from None
