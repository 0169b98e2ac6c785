"""A throwaway team server for the tests marked ``server``: PostgreSQL + ``mlflow server`` on loopback.

PostgreSQL comes from the machine (Debian's ``postgresql`` package; ``make test-server`` installs
it when ``pg_ctl``/``initdb`` are missing). ``initdb`` refuses to run as root, so as root the
cluster is created and started as the ``postgres`` user (the package creates it) in a temp folder
that user owns. Everything listens on 127.0.0.1 only and is stopped (and its folder removed) when
the context ends, also after a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arflare.ui import _group_alive  # the same liveness check `arflare ui` stops its server with

PG_USER = "postgres"  # the cluster's superuser (and, as root, the OS user that runs it)


@dataclass(frozen=True)
class TeamServer:
    """Where the throwaway server listens.

    Attributes:
        postgres_port: Loopback port of PostgreSQL.
        mlflow_uri: ``http://127.0.0.1:PORT`` of the MLflow server (``MLFLOW_TRACKING_URI``).
        artifacts: The folder the MLflow server proxies artifacts to.
    """

    postgres_port: int
    mlflow_uri: str
    artifacts: Path

    def database_url(self, database: str) -> str:
        """SQLAlchemy URL of one database of the cluster (psycopg 3 driver)."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.postgres_port}/{database}"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL server tool: on PATH, else the newest /usr/lib/postgresql/<v>/bin; fails when absent."""
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda p: int(Path(p).parts[-3]))
    if not candidates:
        pytest.fail(f"PostgreSQL's {tool} is not installed; run: make test-server (it installs postgresql)")
    return candidates[-1]


def _as_postgres(command: list[str]) -> list[str]:
    """``command`` run as the postgres OS user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", PG_USER, "--", *command]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=PG_USER)


@contextlib.contextmanager
def postgres(timings: dict[str, float]) -> Iterator[int]:
    """A fresh PostgreSQL cluster on a free loopback port; yields the port, stops and removes it after."""
    folder = Path(tempfile.mkdtemp(prefix="arflare-pg-"))
    _chown_to_postgres(folder)  # mkdtemp is 0700 and owned by us: the postgres user must own it
    data, port = folder / "data", free_port()
    started = time.perf_counter()
    try:
        subprocess.run(_as_postgres([pg_bin("initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                                     "--encoding=UTF8", "--no-sync"]), check=True, capture_output=True, text=True)
        timings["initdb"] = time.perf_counter() - started
        started = time.perf_counter()
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} -c fsync=off"
        subprocess.run(_as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                                     "-w", "-t", "60", "start"]), check=True, capture_output=True, text=True)
        timings["postgres start"] = time.perf_counter() - started
        try:
            yield port
        finally:
            started = time.perf_counter()
            subprocess.run(_as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, text=True)
            timings["postgres stop"] = time.perf_counter() - started
            assert not (data / "postmaster.pid").exists(), "PostgreSQL did not stop"
    except subprocess.CalledProcessError as exc:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        pytest.fail(f"{' '.join(exc.cmd)} failed:\n{exc.stdout}\n{exc.stderr}\n{log}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_databases(port: int, *names: str) -> None:
    """``CREATE DATABASE`` each name (MLflow and Optuna both keep an ``alembic_version`` table: one each)."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path, timings: dict[str, float]) -> Iterator[str]:
    """``mlflow server`` on a free loopback port with artifact proxying; yields its URI, stops it after."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(artifacts), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    started = time.perf_counter()
    with open(log, "w") as out:
        # Its own session: stopping it reaches the workers it forks, so nothing is left behind.
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, server, log)
        timings["mlflow server start"] = time.perf_counter() - started
        yield uri
    finally:
        started = time.perf_counter()
        stop_group(server)
        timings["mlflow server stop"] = time.perf_counter() - started


def _wait_healthy(uri: str, server: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {uri}/health within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


def stop_group(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process's session, then SIGKILL what is left after ``grace_s``."""
    import signal

    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, even when the leader is gone
    process.wait()
    deadline = time.monotonic() + 10
    while _group_alive(process.pid):  # no orphans: every process of the group is gone
        if time.monotonic() > deadline:
            pytest.fail(f"processes of group {process.pid} survived SIGKILL")
        time.sleep(0.1)


@contextlib.contextmanager
def team_server(folder: Path, timings: dict[str, float]) -> Iterator[TeamServer]:
    """PostgreSQL with databases ``mlflow`` and ``optuna``, and an MLflow server on the first."""
    with postgres(timings) as port:
        create_databases(port, "mlflow", "optuna")
        artifacts = folder / "server-artifacts"
        artifacts.mkdir()
        base = TeamServer(postgres_port=port, mlflow_uri="", artifacts=artifacts)
        with mlflow_server(base.database_url("mlflow"), artifacts, folder / "mlflow-server.log", timings) as uri:
            yield TeamServer(postgres_port=port, mlflow_uri=uri, artifacts=artifacts)
