"""Every MLflow call of arflare: store location, run lifecycle, and read-back as plain records.

Longer than the ~300-line guide because it is the one module allowed to call MLflow; what
needs no MLflow (heartbeat, stale status, the run record) is in ``registry.liveness``.

MLflow is imported lazily inside functions because ``import mlflow`` costs about a second,
which `arflare --help` and `arflare list` should not pay. All calls go through an explicit
``MlflowClient`` and run ids, never the fluent active-run API, because runs nest and run in
worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry._common import flatten
from registry.liveness import (
    DEFAULT_STALE_AFTER_S,
    HEARTBEAT_EVERY_S,
    STALE,
    TAG_HEARTBEAT,
    RunRecord,
    heartbeat,
    heartbeat_now,
    last_sign_of_life,
    shown_status,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Tags this package writes or queries itself; arflare.record lists them with the rest.
TAG_EXPERIMENT = "arflare.experiment"
TAG_SPEC_HASH = "arflare.spec_hash"
TAG_GROUP = "arflare.group"
TAG_ERROR = "arflare.error"
TAG_PARENT = "mlflow.parentRunId"
TAG_STUDY = "arflare.study"  # on a sweep's parent run
TAG_BASE_HASH = "arflare.base_hash"  # what a study searches around: base spec + data
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_TRIAL_STATE = "arflare.trial_state"
TAG_BEST_TRIAL = "arflare.best_trial"
TAG_DUPLICATE_OF = "arflare.duplicate_of"
TAG_RETRY_OF = "arflare.retry_of"  # a trial queued again after its worker died: the trial it replaces
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# MLflow 3's experiment-level switch between its GenAI pages and the runs table; the UI reads
# this tag (values from its ExperimentKind enum; "custom_model_development" is "Model training").
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# A runs-table view stored on the experiment, opened by the URL query ?viewStateShareKey=<key>
# (MLflow's "share view"): the only way to show metric columns without clicking in the UI.
_SHARED_VIEW_TAG = "mlflow.sharedViewState."

# MLflow's own limits (mlflow.utils.validation), copied so that flattening needs no mlflow import.
MAX_PARAM_VALUE_LENGTH = 6000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_ERROR_TAG_LENGTH = 500
_PAGE_SIZE = 1000  # MLflow's default page of search_runs


def resolve_tracking_uri(registry_dir: Path) -> str:
    """Return the MLflow tracking URI for a registry checkout.

    Args:
        registry_dir: Directory holding ``experiments.yaml``; the store lives in its ``mlruns/``.

    Returns:
        ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<registry_dir>/mlruns/mlflow.db``
        (MLflow 3 no longer accepts a plain file store). Nothing is created on disk.
    """
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    return f"sqlite:///{(Path(registry_dir) / 'mlruns' / 'mlflow.db').resolve()}"


def default_artifact_location(registry_dir: Path) -> str | None:
    """Return the artifact root for new experiments, or None to let a configured server decide.

    Args:
        registry_dir: Directory holding ``experiments.yaml``.

    Returns:
        A ``file://`` URI of ``<registry_dir>/mlruns/artifacts``, or None when
        ``MLFLOW_TRACKING_URI`` is set (the server then owns artifact placement).
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(registry_dir) / "mlruns" / "artifacts").resolve().as_uri()


def git_state(path: Path) -> tuple[str | None, bool | None]:
    """Return ``(commit sha, dirty)`` of the git work tree containing ``path``.

    Args:
        path: Any file or directory inside the work tree.

    Returns:
        The HEAD commit (None before the first commit) and whether tracked or untracked,
        non-ignored files differ from it; ``(None, None)`` outside a repo or without git.
    """
    cwd = Path(path) if Path(path).is_dir() else Path(path).parent
    status = _git(cwd, "status", "--porcelain")
    if status is None:
        return None, None
    sha = _git(cwd, "rev-parse", "--verify", "--quiet", "HEAD")
    return (sha.strip() or None) if sha else None, bool(status.strip())


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def flatten_params(spec: Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping into MLflow params with dotted keys and string values.

    Args:
        spec: Nested mapping, e.g. ``spec.model_dump(mode="json")``.
        prefix: Key prefix for the top level (``"model"`` gives ``"model.name"``).

    Returns:
        ``{"model.name": "resnet18", "optim.lr": "0.001", ...}``; lists become JSON text,
        empty mappings ``"{}"``, and values are truncated to MLflow's 6000-character limit.
    """
    return {name: _param_text(value)[:MAX_PARAM_VALUE_LENGTH] for name, value in flatten(spec, prefix).items()}


def _param_text(value: object) -> str:
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, default=str)
    return str(value)


def count_runs(tracking_uri: str, *, experiment: str, stale_after_s: float | None = None,
               tag_filter: tuple[str, Collection[str | None]] | None = None) -> dict[str, int]:
    """Count runs per ``arflare.experiment`` tag, fast enough for `arflare list`.

    A sqlite store is read directly (read-only, no mlflow import, nothing created when the
    file is missing); other stores, or a sqlite schema this does not know, go through MLflow.

    Args:
        tracking_uri: Store URI, usually from :func:`resolve_tracking_uri`.
        experiment: MLflow experiment name.
        stale_after_s: When given, count only STALE runs (RUNNING and silent for longer).
        tag_filter: ``(tag, values)``: count only runs whose ``tag`` has one of ``values``
            (None among them: runs without the tag), e.g. only the run kinds that train.

    Returns:
        ``{"cnn-baseline": 3, ...}`` over runs of any status that are not deleted.
    """
    limit = DEFAULT_STALE_AFTER_S if stale_after_s is None else stale_after_s
    path = _sqlite_path(tracking_uri)
    rows = None
    if path is not None:
        if not path.is_file():
            return {}
        try:
            rows = _runs_in_sqlite(path, experiment, tag_filter[0] if tag_filter else "")
        except sqlite3.Error:
            log.debug("Reading %s directly failed; asking MLflow instead", path, exc_info=True)
    if rows is None:
        tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment, stale_after_s=limit)
        rows = [(r.tags.get(TAG_EXPERIMENT), r.status, r.tags.get(tag_filter[0]) if tag_filter else None)
                for r in tracker.search()]
    else:
        rows = [(name, shown_status(status, last_sign_of_life({TAG_HEARTBEAT: beat} if beat else {}, start),
                                    stale_after_s=limit), value) for name, status, start, beat, value in rows]
    wanted = [name for name, status, value in rows if name is not None and (stale_after_s is None or status == STALE)
              and (tag_filter is None or value in tag_filter[1])]
    return dict(Counter(wanted))


def _unique_key_broken(exc: Exception) -> bool:
    """Whether a store error is a unique-key violation (sqlite's or PostgreSQL's wording, direct or via a server)."""
    text = str(exc).lower()
    return "unique constraint" in text or "duplicate key" in text


def _sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def _runs_in_sqlite(path: Path, experiment: str, extra_tag: str) -> list[tuple[str | None, str, int | None, str | None, str | None]]:
    # The runs/tags/experiments tables of MLflow's schema; lifecycle_stage filters what the
    # MLflow API would hide (deleted runs and experiments). The last column: extra_tag's value.
    query = """
        SELECT t.value, r.status, r.start_time, h.value, k.value FROM runs r
        JOIN experiments e ON e.experiment_id = r.experiment_id
        LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ?
        LEFT JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = ?
        LEFT JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = ?
        WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active'
    """
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(query, (TAG_EXPERIMENT, TAG_HEARTBEAT, extra_tag, experiment)).fetchall()
    finally:
        connection.close()


def _record(run: Run, stale_after_s: float) -> RunRecord:
    tags = dict(run.data.tags)
    alive = last_sign_of_life(tags, run.info.start_time)
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        status=shown_status(run.info.status, alive, stale_after_s=stale_after_s),
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        tags=tags,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        artifact_uri=run.info.artifact_uri,
        heartbeat=alive,
    )


def _quote(value: str) -> str:
    """Quote a literal for an MLflow filter string (which has no escape syntax)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"Cannot search for {value!r}: it holds both quote characters; rename it")


class Tracker:
    """One MLflow experiment on one store; safe to create in several processes at once.

    Construction touches nothing: the store (sqlite file, experiment) is created on first use,
    so a CLI that builds a Tracker only after validation never leaves debris for bad input.
    Creating or upgrading a sqlite store, and creating the experiment, happen under a file
    lock beside the database, so many processes may open a store that does not exist yet.

    Args:
        tracking_uri: Store URI, usually from :func:`resolve_tracking_uri`.
        experiment: MLflow experiment name that holds every arflare run.
        artifact_location: Artifact root used when the experiment is created, usually from
            :func:`default_artifact_location`; None lets the store pick.
        stale_after_s: A RUNNING run silent for longer reads as ``STALE`` in search results.
    """

    def __init__(self, *, tracking_uri: str, experiment: str, artifact_location: str | None = None,
                 stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.stale_after_s = stale_after_s
        self._client_cache: MlflowClient | None = None
        self._experiment_id: str | None = None

    @property
    def _client(self) -> MlflowClient:
        if self._client_cache is None:
            from mlflow.tracking import MlflowClient

            with self._store_lock():
                client = MlflowClient(tracking_uri=self.tracking_uri)
                _ = client._tracking_client.store  # creates or migrates a sqlite schema: once, under the lock
            self._client_cache = client
        return self._client_cache

    def _store_lock(self):
        """A file lock beside a sqlite store (no-op for servers, which serialise themselves).

        Without it, processes that open a new store at once all run MLflow's schema migrations
        and break the database ("table _alembic_tmp_... already exists").
        """
        path = _sqlite_path(self.tracking_uri)
        if path is None:
            return nullcontext()
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
        return FileLock(str(path) + ".lock")

    @contextmanager
    def exclusive(self, name: str, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold a named lock shared by every process on this machine that uses this store.

        For work that several processes would otherwise all do at once and record twice (the
        same preflight check for eight runs started together): the first does it, the others
        wait and then find its result. A sqlite store gets a file lock in ``<db>.locks/`` (an OS
        lock, ``flock``, which the OS releases when its holder dies); a server store gets none, so
        there concurrent callers may each do the work.

        Args:
            name: What is being done, e.g. ``gates-<hash>`` (a file name).
            on_wait: Called once when another process holds the lock, before waiting for it.
        """
        path = _sqlite_path(self.tracking_uri)
        if path is None:
            yield
            return
        from filelock import FileLock, Timeout

        folder = Path(str(path) + ".locks")
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _get_or_create_experiment(self) -> str:
        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            if found is None:
                with self._store_lock():  # one creator; the others find it
                    found = self._client.get_experiment_by_name(self.experiment)
                    if found is None:
                        self._create_experiment()
                        found = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = found.experiment_id
        return self._experiment_id

    def _create_experiment(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_experiment(self.experiment, artifact_location=self.artifact_location,
                                           tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING_KIND})
        except MlflowException as exc:
            # Another process (on a server store, where no file lock helps) created it first.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _existing_experiment_id(self) -> str | None:
        """Experiment id for read-only queries, which must not create the experiment."""
        if self._experiment_id is None:
            sqlite_file = _sqlite_path(self.tracking_uri)
            if sqlite_file is not None and not sqlite_file.exists():
                return None  # opening a client would create the database: a read must not
            found = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = found.experiment_id if found else None
        return self._experiment_id

    def _search_runs(
        self, filter_string: str, *, order_by: list[str], max_results: int | None = None
    ) -> list[RunRecord]:
        experiment_id = self._existing_experiment_id()
        if experiment_id is None:
            return []
        records: list[RunRecord] = []
        token = None
        while True:
            page = self._client.search_runs(
                [experiment_id], filter_string, max_results=min(max_results or _PAGE_SIZE, _PAGE_SIZE),
                order_by=order_by, page_token=token,
            )
            records.extend(_record(run, self.stale_after_s) for run in page)
            token = page.token
            if not token or (max_results is not None and len(records) >= max_results):
                return records[:max_results]

    def find_latest(self, *, spec_hash: str) -> RunRecord | None:
        """Return the newest run of any status tagged ``arflare.spec_hash == spec_hash``, if any."""
        query = f"tags.`{TAG_SPEC_HASH}` = {_quote(spec_hash)}"
        found = self._search_runs(query, order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None

    def search(self, *, experiments: Sequence[str] | None = None, filter_string: str = "") -> list[RunRecord]:
        """Return runs of every status, oldest first.

        Args:
            experiments: Keep runs whose ``arflare.experiment`` tag is one of these; None keeps all.
            filter_string: Extra MLflow filter, e.g. ``"metrics.`test/tss` > 0.5"``.
        """
        order = ["attributes.start_time ASC"]
        if experiments is None:
            return self._search_runs(filter_string, order_by=order)
        records: list[RunRecord] = []
        for name in dict.fromkeys(experiments):  # MLflow has no IN for tags: one query per name
            query = f"tags.`{TAG_EXPERIMENT}` = {_quote(name)}"
            if filter_string:
                query = f"{query} and {filter_string}"
            records += self._search_runs(query, order_by=order)
        return sorted(records, key=lambda r: r.start_time or 0)

    def count_runs(self) -> dict[str, int]:
        """Return the number of runs (any status) per ``arflare.experiment`` tag.

        The module-level :func:`count_runs` gives the same answer without importing mlflow.
        """
        query = f"tags.`{TAG_EXPERIMENT}` IS NOT NULL"
        runs = self._search_runs(query, order_by=["attributes.start_time ASC"])
        return dict(Counter(run.tags[TAG_EXPERIMENT] for run in runs))

    @contextmanager
    def start_run(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, object] | None = None,
        parent_run_id: str | None = None,
        log_file: Path | None = None,
    ) -> Iterator[RunHandle]:
        """Create a run, yield a handle to it, and always record how it ended.

        Normal exit ends the run FINISHED; KeyboardInterrupt (or SystemExit) ends it KILLED;
        any other exception logs ``traceback.txt``, tags ``arflare.error`` and ends it FAILED.
        Exceptions are re-raised. ``log_file``, when it exists, is uploaded as ``log.txt``
        first; a failed upload is logged but never prevents the status from being written.

        Args:
            run_name: Display name of the run.
            tags: Tags such as ``arflare.experiment`` and ``arflare.spec_hash``.
            params: Params to log; nested mappings are flattened to dotted keys.
            parent_run_id: Makes this a child run of that run in the MLflow UI.
            log_file: A log written during the run, uploaded when it ends.
        """
        handle = RunHandle(self, self.create_run(run_name=run_name, tags=tags, parent_run_id=parent_run_id))
        with self._recording_end(handle, log_file=log_file):
            if params:
                handle.log_params(params)
            yield handle

    def create_run(self, *, run_name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
        """Create a RUNNING run and return its id; the caller ends it (:meth:`set_terminated`).

        :meth:`start_run` is the usual way; this is for a run several processes share (a sweep's parent).
        """
        all_tags = {TAG_HEARTBEAT: heartbeat_now(), **{key: str(value) for key, value in tags.items()}}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        return self._client.create_run(self._get_or_create_experiment(), tags=all_tags, run_name=run_name).info.run_id

    @contextmanager
    def resume_run(self, run_id: str, *, tags: Mapping[str, str] | None = None,
                   log_file: Path | None = None) -> Iterator[RunHandle]:
        """Reopen a run that died (KILLED, or RUNNING without a heartbeat): RUNNING again, then ended as in :meth:`start_run`.

        Args:
            run_id: The run to continue; its params, metrics and artifacts stay.
            tags: Tags to set (or overwrite) when it reopens.
            log_file: As for :meth:`start_run`; it replaces the earlier ``log.txt``.
        """
        self.set_running(run_id)
        handle = RunHandle(self, run_id)
        with self._recording_end(handle, log_file=log_file):
            if tags:
                handle.set_tags(tags)
            yield handle

    @contextmanager
    def _recording_end(self, handle: RunHandle, *, log_file: Path | None) -> Iterator[None]:
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            self._finish(handle.run_id, "KILLED", log_file=log_file)
            raise
        except Exception as exc:
            self._finish(handle.run_id, "FAILED", log_file=log_file, error=exc)
            raise
        else:
            self._finish(handle.run_id, "FINISHED", log_file=log_file)

    def get_run(self, run_id: str) -> RunRecord:
        """Read one run back (status ``STALE`` as in :meth:`search`)."""
        return _record(self._client.get_run(run_id), self.stale_after_s)

    def metric_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which ``key`` was logged on a run (empty when never)."""
        return {metric.step for metric in self._client.get_metric_history(run_id, key)}

    def _finish(
        self, run_id: str, status: str, *, log_file: Path | None, error: BaseException | None = None
    ) -> None:
        # Each step is guarded on its own: the status below is the one thing that must land.
        if log_file is not None and Path(log_file).is_file():
            self._try(f"upload {log_file}", self._upload_as, run_id, Path(log_file), "log.txt")
        if error is not None:
            text = "".join(traceback.format_exception(error))
            self._try("upload traceback.txt", self._client.log_text, run_id, text, "traceback.txt")
            self._try(f"tag {TAG_ERROR}", self.set_tags, run_id, {TAG_ERROR: _error_summary(error)})
        self.set_terminated(run_id, status)

    @staticmethod
    def _try(what: str, func: Any, *args: Any) -> None:
        try:
            func(*args)
        except Exception:
            log.warning("Could not %s for the run; its status is still recorded", what, exc_info=True)

    def _upload_as(self, run_id: str, local_path: Path, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / name
            shutil.copyfile(local_path, copy)
            self._client.log_artifact(run_id, str(copy))

    def set_terminated(self, run_id: str, status: str) -> None:
        """End a run with ``status`` (FINISHED, FAILED or KILLED); used for parent runs."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"Unknown run status {status!r}; use one of: {', '.join(TERMINAL_STATUSES)}")
        self._client.set_terminated(run_id, status)

    def set_running(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed run or sweep parent) with a fresh heartbeat."""
        self._client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {TAG_HEARTBEAT: heartbeat_now()})

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Log metrics at ``step`` (default 0) in as few batches as MLflow allows.

        Non-finite values are logged as they are (MLflow stores nan; ±inf become ±max float).
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, _as_float(key, value), now, step or 0) for key, value in metrics.items()]
        for start in range(0, len(entries), _METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=entries[start : start + _METRICS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) tags on a run; values are converted to strings."""
        from mlflow.entities import RunTag

        entries = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(entries), _PARAMS_PER_BATCH):
            self._client.log_batch(run_id, tags=entries[start : start + _PARAMS_PER_BATCH])

    def fetch_artifact(self, run_id: str, artifact_path: str, dst_dir: Path) -> Path:
        """Copy one artifact of a run into ``dst_dir`` and return its local path.

        Raises:
            FileNotFoundError: the run has no such artifact.
        """
        from mlflow.exceptions import MlflowException

        Path(dst_dir).mkdir(parents=True, exist_ok=True)
        try:
            local = self._client.download_artifacts(run_id, artifact_path, str(dst_dir))
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id} has no artifact {artifact_path!r} ({exc})") from None
        return Path(local)

    def log_dataset_input(self, run_id: str, *, name: str, digest: str, source_uri: str, context: str,
                          profile: Mapping[str, object] | None = None) -> None:
        """Record a data set the run produced or read as an MLflow dataset input (shown in the UI's Datasets).

        Args:
            run_id: The run.
            name: Dataset name, e.g. ``hard_negatives``.
            digest: Content digest computed by the caller (identical content, identical digest).
            source_uri: Where the data lives, e.g. ``runs:/<id>/hard_negatives/table.parquet``.
            context: The ``mlflow.data.context`` tag (``training``, ``mined``, ...).
            profile: Small summary (row counts) stored with the dataset.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        dataset = Dataset(name=name, digest=digest, source_type="artifact", source=json.dumps({"uri": source_uri}),
                          profile=json.dumps(dict(profile or {}), default=str))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        try:
            self._client.log_inputs(run_id, inputs)
        except MlflowException as exc:
            # MLflow looks the dataset up, then inserts it: two runs of one experiment that log the same
            # data at once both miss it, and the later insert breaks the (experiment, name, digest)
            # unique key. The failed transaction was rolled back whole and the winner's row is committed
            # by then, so a second try finds and links it. Any other error is raised as it is.
            if not _unique_key_broken(exc):
                raise
            self._client.log_inputs(run_id, inputs)

    def dataset_inputs(self, run_id: str) -> list[dict[str, str]]:
        """The dataset inputs of a run: ``name, digest, source, context`` each."""
        run = self._client.get_run(run_id)
        out = []
        for item in run.inputs.dataset_inputs:
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
            out.append({"name": item.dataset.name, "digest": item.dataset.digest, "source": item.dataset.source,
                        "context": context})
        return out

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Log params (nested mappings flattened to dotted keys), 100 per MLflow call.

        MLflow params are write-once: logging a key again with another value raises.
        """
        from mlflow.entities import Param

        entries = [Param(key, value) for key, value in flatten_params(params).items()]
        for start in range(0, len(entries), _PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=entries[start : start + _PARAMS_PER_BATCH])

    def download_artifact(self, run_id: str, path: str, dst: Path) -> Path | None:
        """Copy one artifact of a run into ``dst`` (a file lands as ``dst/<its base name>``); None when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        Path(dst).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no bar on stderr
        try:
            return Path(self._client.download_artifacts(run_id, path, str(dst)))
        except (MlflowException, OSError):
            return None

    def experiment_id(self) -> str | None:
        """The experiment's id, or None when nothing was tracked yet (never creates the store)."""
        return self._existing_experiment_id()

    def mark_model_training(self) -> bool:
        """Tag an existing experiment as model training, so MLflow 3's UI opens on its runs table.

        Returns:
            False when the experiment does not exist yet (it gets the tag when it is created).
        """
        experiment_id = self._existing_experiment_id()
        if experiment_id is None:
            return False
        self._client.set_experiment_tag(experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING_KIND)
        return True

    def set_runs_view(self, key: str, *, metrics: Sequence[str], order_by: str, charts: Sequence[str] = (),
                      ascending: bool = False) -> bool:
        """Store a runs view: ``metrics`` as table columns sorted by ``order_by``, ``charts`` as line charts.

        Open it with ``#/experiments/<id>/runs?viewStateShareKey=<key>`` (add ``&compareRunsMode=CHART``
        for the charts). The state's shape is the MLflow UI's own (3.x ``selectedColumns``,
        ``compareRunCharts``); a UI that does not know a field ignores it and shows its default.

        Returns:
            False when the experiment does not exist yet (nothing is created).
        """
        experiment_id = self._existing_experiment_id()
        if experiment_id is None:
            return False
        columns = [f"metrics.`{name}`" for name in metrics]
        section = "arflare"
        state = {"selectedColumns": [*columns, "attributes.`Duration`"], "orderByKey": f"metrics.`{order_by}`",
                 "orderByAsc": ascending,
                 "compareRunSections": [{"uuid": section, "name": "arflare", "display": True, "isReordered": False,
                                         "deleted": False, "isGenerated": False}],
                 "compareRunCharts": [{"uuid": f"arflare-{i}", "type": "LINE", "metricKey": name,
                                       "selectedMetricKeys": [name], "displayName": name, "scaleType": "linear",
                                       "xAxisKey": "step", "lineSmoothness": 0, "runsCountToCompare": 10,
                                       "metricSectionId": section, "deleted": False, "isGenerated": True}
                                      for i, name in enumerate(charts)]}
        self._client.set_experiment_tag(experiment_id, _SHARED_VIEW_TAG + key, json.dumps(state))
        return True

    def ui_command(self, *, port: int = 5000, access_log: bool = False) -> list[str]:
        """Command that serves the MLflow UI for this store on localhost with one worker.

        One uvicorn worker serves one user's browser; MLflow's default of four costs a Python
        process (~300 MB) each. Run it with :func:`ui_environment`.

        Args:
            port: TCP port on 127.0.0.1.
            access_log: Keep uvicorn's one-line-per-request access log.
        """
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.tracking_uri]
        if self.artifact_location:
            command += ["--default-artifact-root", self.artifact_location]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        return command if access_log else command + ["--uvicorn-opts", "--no-access-log"]


def ui_environment() -> dict[str, str]:
    """Environment for :meth:`Tracker.ui_command`: no GenAI job runner.

    MLflow 3 starts a huey job consumer beside the server (for GenAI evaluation jobs) with its
    queue in a fresh /dev/shm folder that outlives the server. Runs never use it, and
    ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` skips both (mlflow.server._run_server).
    """
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _as_float(key: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(
            f"Metric {key!r} must be a number, got {value!r}; log text with log_text instead"
        ) from None


def _error_summary(error: BaseException) -> str:
    """``"ExcType: first line of message"``, short enough for a tag and a table cell."""
    message = str(error).strip().splitlines()
    summary = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    return summary[:_ERROR_TAG_LENGTH]


class RunHandle:
    """What training code sees of its run (its "reporter"); no MLflow types leak out.

    Args:
        tracker: The tracker that created the run.
        run_id: The MLflow run id.
    """

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self._tracker = tracker
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r})"

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Log metrics at ``step`` in one call; nan/inf are logged, never raised on."""
        self._tracker.log_metrics(self.run_id, metrics, step=step)

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params; nested mappings become dotted keys."""
        self._tracker.log_params(self.run_id, params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the run."""
        self._tracker.set_tags(self.run_id, tags)

    def log_dataset(self, **dataset: object) -> None:
        """Record the data the run reads; arguments as :meth:`Tracker.log_dataset_input`."""
        self._tracker.log_dataset_input(self.run_id, **dataset)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory with its contents, as run artifacts.

        Args:
            local_path: File or directory to upload.
            artifact_path: Artifact sub-directory to put it in. A directory lands under its
                own name unless this is given (then its contents go there).
        """
        local_path = Path(local_path)
        client = self._tracker._client
        if local_path.is_dir():
            client.log_artifacts(self.run_id, str(local_path), artifact_path or local_path.name)
        elif local_path.is_file():
            client.log_artifact(self.run_id, str(local_path), artifact_path)
        else:
            raise FileNotFoundError(f"Cannot log artifact {str(local_path)!r}: no such file or directory")

    def log_dict(self, obj: object, artifact_file: str) -> None:
        """Save ``obj`` as a JSON or YAML artifact, chosen by the suffix of ``artifact_file``."""
        if Path(artifact_file).suffix not in (".json", ".yaml", ".yml"):
            raise ValueError(f"Cannot tell the format of {artifact_file!r}; end it in .json, .yaml or .yml")
        self._tracker._client.log_dict(self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Save ``text`` as the artifact ``artifact_file`` (e.g. ``"reports/summary.md"``)."""
        self._tracker._client.log_text(self.run_id, text, artifact_file)

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which metric ``key`` is already in this run's history."""
        return self._tracker.metric_steps(self.run_id, key)

    def beat(self) -> None:
        """Refresh the heartbeat tag (the run is alive)."""
        self._tracker.set_tags(self.run_id, {TAG_HEARTBEAT: heartbeat_now()})
