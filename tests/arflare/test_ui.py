"""`arflare ui` as a server: busy port, minimum processes, quiet, clean stop, no leftovers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from arflare.cli import main
from arflare.ui import port_in_use, runs_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(REPO / "experiments.yaml", tmp_path / "experiments.yaml")
    return tmp_path / "experiments.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_busy_port_exits_2_with_the_fix_and_creates_nothing(registry_file, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_in_use(port)
        assert main(["ui", "--port", str(port), "--no-browser", "--file", str(registry_file)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and f"--port {port + 1}" in err
    assert not (registry_file.parent / "mlruns").exists()


def test_runs_url_points_at_the_runs_table():
    assert runs_url(5000, "7") == "http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=arflare"
    assert runs_url(5000, None) == "http://127.0.0.1:5000"


def read_until(process: subprocess.Popen, marker: str, timeout: float = 240) -> str:
    """Lines of ``process``'s output until one holds ``marker`` (a thread reads: no select on buffered pipes)."""
    lines: list[str] = []

    def pump() -> None:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                return

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    reader.join(timeout)
    return "".join(lines)


def _group(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split(None, 1)[0] == str(pgid)]


def _shm_folders() -> set[str]:
    root = Path("/dev/shm")
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def test_serves_quietly_with_one_worker_and_sigterm_stops_every_child(registry_file):
    port, shm_before = _free_port(), _shm_folders()
    ui = subprocess.Popen([sys.executable, "-m", "arflare.cli", "ui", "--port", str(port), "--no-browser",
                           "--file", str(registry_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines = read_until(ui, "(Ctrl-C").splitlines()
        assert any(f"MLflow UI: http://127.0.0.1:{port}" in line for line in lines), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200
        server = [line for line in subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True,
                                                  text=True).stdout.splitlines()
                  if line.split()[1] == str(ui.pid)]
        assert len(server) == 1, server
        pgid = int(server[0].split()[0])
        members = _group(pgid)
        assert len(members) == 2, members  # mlflow server + one uvicorn worker, no job runner
        assert not any("huey" in m for m in members)
        assert len(lines) <= 3, lines  # quiet: no server banner, no access log
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        assert "stopping the MLflow UI" in ui.stdout.read()
        assert _group(pgid) == []
        assert not port_in_use(port)
        assert _shm_folders() <= shm_before
        assert (registry_file.parent / "mlruns" / "ui.log").is_file()
    finally:
        if ui.poll() is None:
            ui.kill()
