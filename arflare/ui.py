"""``arflare ui``: the MLflow UI of this store, run as a server a user can trust.

* The port is checked before anything starts: a busy port exits 2 with the fix.
* Only what browsing runs needs: one uvicorn worker, no GenAI job runner (and so no
  /dev/shm queue folder left behind), see :meth:`registry.tracking.Tracker.ui_command`.
* Quiet by default: the server's own output goes to ``ui.log`` beside the store and is shown
  only if the server dies; ``--verbose`` passes it (with access logs) to the terminal.
* The server runs in its own process group; Ctrl-C and SIGTERM stop the whole group (SIGTERM,
  then SIGKILL after a grace period), so no worker outlives the command.
* It prints, and where a desktop is available opens, the experiment's runs table in a stored
  view that shows the headline metrics as columns (MLflow shows none by default).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from arflare.errors import UsageError

HOST = "127.0.0.1"
_START_TIMEOUT_S = 120  # importing mlflow and migrating an old sqlite store can be slow on a busy machine
_STOP_GRACE_S = 10


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether binding ``host:port`` fails, the way the server's own bind would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


VIEW_KEY = "arflare"  # the runs-table view `arflare ui` stores on the experiment and opens


def runs_url(port: int, experiment_id: str | None) -> str:
    """The runs table of the experiment in arflare's view, or the experiment list before any run."""
    base = f"http://{HOST}:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}" if experiment_id else base


def default_view() -> dict:
    """Columns (sorted by validation TSS, never test) and per-epoch charts of arflare's runs view."""
    from arflare.metrics import headline_metrics
    from arflare.plots import CURVE_SKILLS

    from arflare.record import best_val_metric

    best = best_val_metric("tss")  # the kept checkpoint's val TSS; val/tss is the per-epoch history
    return {"metrics": [best, *(f"test/{m.name}" for m in headline_metrics())], "order_by": best,
            "charts": ["train/loss", "val/loss", *CURVE_SKILLS]}


def serve(tracker, *, port: int, verbose: bool = False, open_browser: bool = True, log_dir: Path) -> int:
    """Serve the MLflow UI for ``tracker``'s store until Ctrl-C or SIGTERM; returns the exit code.

    Args:
        tracker: a :class:`registry.tracking.Tracker` on a local (sqlite) store.
        port: TCP port on 127.0.0.1.
        verbose: pass the server's output, access logs included, to the terminal.
        open_browser: open the runs table in the desktop's browser once the server answers.
        log_dir: folder for ``ui.log`` (quiet mode).

    Raises:
        UsageError: the port is taken, or the store is a remote server (it has its own UI).
    """
    from registry.tracking import ui_environment

    if tracker.tracking_uri.startswith(("http://", "https://")):
        raise UsageError(f"MLFLOW_TRACKING_URI is the server {tracker.tracking_uri}; open it in a browser, "
                         "there is no local store to serve")
    if port_in_use(port):
        raise UsageError(f"port {port} on {HOST} is already in use (another arflare ui or MLflow server?); "
                         f"stop it, or pick another port: arflare ui --port {port + 1}")
    tracker.mark_model_training()
    tracker.set_runs_view(VIEW_KEY, **default_view())
    url = runs_url(port, tracker.experiment_id())
    log_path = Path(log_dir) / "ui.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") if not verbose else contextlib.nullcontext() as log:
        server = subprocess.Popen(tracker.ui_command(port=port, access_log=verbose),
                                  env={**os.environ, **ui_environment()}, start_new_session=True,
                                  stdout=log, stderr=subprocess.STDOUT if log else None)
        try:
            if not _wait_until_up(server, port):
                print(f"error: the MLflow server stopped before answering (exit code {server.returncode})"
                      + ("" if verbose else f"; its log, {log_path}:\n{_tail(log_path)}"), file=sys.stderr)
                return 1
            charts = f"\n  per-epoch charts: {url}&compareRunsMode=CHART" if "?" in url else ""
            print(f"MLflow UI: {url}{charts}\n  (Ctrl-C to stop{'' if verbose else f'; server log: {log_path}'})",
                  file=sys.stderr, flush=True)
            if open_browser and _has_desktop():
                import webbrowser

                webbrowser.open(url)
            code = server.wait()
            print(f"error: the MLflow server exited with code {code}"
                  + ("" if verbose else f"; its log, {log_path}:\n{_tail(log_path)}"), file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI turns it into KeyboardInterrupt)
            print("stopping the MLflow UI", file=sys.stderr)
            return 0
        finally:
            _stop_group(server)


def _wait_until_up(server: subprocess.Popen, port: int) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after the grace period."""
    # Keep a second Ctrl-C or SIGTERM from interrupting the clean-up itself.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, sig)
            try:
                server.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(server.pid):
                return
            time.sleep(0.5)  # the leader is gone; give its children the same grace once
            if not _group_alive(server.pid):
                return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _has_desktop() -> bool:
    """A graphical browser can open: on a headless box webbrowser would start a text browser."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
