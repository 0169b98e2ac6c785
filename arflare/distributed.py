"""Data-parallel training over torchrun processes: who owns what, and the few collectives it needs.

``arflare run NAME --nproc N`` starts N processes through ``torch.distributed.run``
(:func:`launch`); a plain ``torchrun --nproc-per-node N -m arflare run NAME`` starts the same
processes. Each process finds its rank in the environment torchrun sets (:func:`start`).

Ownership: rank 0 owns the MLflow run (open, heartbeat, artifacts, status) and the checkpoint
files; the other ranks never touch MLflow and follow rank 0's decisions (skip, new, resume),
which :meth:`Ranks.share` sends them. Every rank seeds every RNG identically, so the state rank 0
saves in ``last.pt`` resumes all of them. Validation and test are split between ranks without
padding and gathered back in dataset order (:meth:`Ranks.gather_split`), so every sample is
scored exactly once. A rank that fails posts its error in torchrun's key-value store before it
dies; rank 0 reads it there and ends the run FAILED naming that rank (:meth:`Ranks.failures`).
Training command only: torch is imported at the top.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from arflare.errors import UsageError

_FAILED_KEY = "arflare/failed"  # torchrun store key a failing rank writes its error under
# Rank 0 prepares (or generates) the data while the others wait at a barrier: allow it time.
_TIMEOUT = timedelta(hours=2)


class PeerFailedError(RuntimeError):
    """Another rank failed; rank 0 raises this so the run ends FAILED with that rank's error."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes (one process: rank 0 of 1).

    With ``world_size == 1`` every method is the identity or a no-op, so the single-process path
    computes exactly what it did before DDP existed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether several processes train this run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that tracks, checkpoints and reports."""
        return self.rank == 0

    def share(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (pickled; keep tensors on the CPU)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            dist.barrier()

    def losses(self, loss: torch.Tensor) -> list[float]:
        """Every rank's loss of this step, in rank order (one scalar each: cheap)."""
        if not self.active:
            return [loss.item()]
        parts = [torch.empty_like(loss) for _ in range(self.world_size)]
        dist.all_gather(parts, loss.detach())
        return [part.item() for part in parts]

    def sync_state(self, model: torch.nn.Module) -> None:
        """Copy rank 0's weights and buffers (BatchNorm statistics) to every rank, in place."""
        if self.active:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in DistributedDataParallel for training (the unwrapped one keeps the weights)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def eval_indices(self, n: int) -> list[int] | None:
        """This rank's dataset positions of an evaluation split (every ``world_size``-th), None for all."""
        return list(range(self.rank, n, self.world_size)) if self.active else None

    def gather_split(self, part):
        """Every rank's :class:`arflare.evaluation.SplitScores` of its :meth:`eval_indices`, merged.

        The result is in dataset order, each sample once, with the loss averaged over all samples:
        what one process scoring the whole split returns.
        """
        if not self.active:
            return part
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, (part.labels, part.scores, part.indices, part.loss * len(part.labels)))
        n = sum(len(p[0]) for p in parts)
        positions = np.concatenate([np.arange(r, n, self.world_size) for r in range(self.world_size)])
        order = np.argsort(positions, kind="stable")
        labels, scores, indices = (np.concatenate([p[k] for p in parts])[order] for k in range(3))
        return type(part)(labels=labels, scores=scores, indices=indices, loss=sum(p[3] for p in parts) / max(n, 1))

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Make one rank's failure every rank's end, and rank 0's run FAILED with its message.

        A failing rank other than 0 posts its traceback in torchrun's store and re-raises.
        Rank 0, interrupted by the dead peer (a collective error, or torchrun's SIGTERM), raises
        :class:`PeerFailedError` with that traceback instead of ending the run KILLED.
        """
        try:
            yield
        except BaseException as exc:
            if not self.active:
                raise
            if not self.is_main and isinstance(exc, Exception):
                text = "".join(traceback.format_exception(exc))[-4000:]
                _try_store(lambda store: store.set(_FAILED_KEY, f"rank {self.rank}: {type(exc).__name__}: {exc}\n{text}"))
                raise
            # Rank 0's own error stands; only an interruption or a broken collective may hide a peer's.
            interrupted = isinstance(exc, (KeyboardInterrupt, dist.DistError)) or type(exc) is RuntimeError
            peer = _peer_failure() if self.is_main and interrupted else None
            if peer is not None:
                raise PeerFailedError(f"{peer.splitlines()[0]} (every rank stopped); that rank's traceback:\n"
                                      + "\n".join(peer.splitlines()[1:])) from exc
            raise


def launched() -> Ranks:
    """The ranks torchrun's environment describes (rank 0 of 1 outside torchrun)."""
    env = os.environ
    return Ranks(rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)),
                 local_rank=int(env.get("LOCAL_RANK", 0)))


def start(devices: Sequence[str]) -> Ranks:
    """Join the process group torchrun prepared (no-op for one process).

    Args:
        devices: The ``train.device`` of every planned run: ``nccl`` on CUDA unless one asks for
            the CPU, where ``gloo`` is used.

    Raises:
        UsageError: more processes on this node than CUDA devices.
    """
    ranks = launched()
    if not ranks.active or dist.is_initialized():
        return ranks
    cuda = torch.cuda.is_available() and "cpu" not in devices
    if cuda:
        if ranks.local_rank >= torch.cuda.device_count():
            raise UsageError(f"{os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on this node but "
                             f"{torch.cuda.device_count()} CUDA devices; use --nproc {torch.cuda.device_count()}")
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=_TIMEOUT)
    return ranks


def stop(ranks: Ranks) -> None:
    """Leave the process group (end of the command)."""
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str], *, module: str = "arflare.cli") -> int:
    """Run ``python -m <module> <argv>`` (an ``arflare`` command) in ``nproc`` processes on this machine
    through ``torch.distributed.run``.

    ``arflare submit --nproc N`` jobs start their ranks here too, with ``module`` their rank entry.

    Returns:
        0 when every process ended well; else the first failed process's exit code when it says
        bad input (2), 130 when interrupted, 1 otherwise (the error is printed above).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun sets 1 thread per process (with a banner) when unset; share the cores instead: those this
    # process may use (a SLURM job's allocation), not the node's.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not on macOS
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", module, *argv]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"arflare: rank {rank} of {nproc} exited with code {failure.exitcode}; its error is printed above",
              file=sys.stderr)
        return 2 if failure.exitcode == 2 else 1
    except SignalException as exc:  # Ctrl-C or SIGTERM at the launcher: torchrun stopped the ranks (run KILLED)
        print(f"interrupted ({exc.sigval.name})", file=sys.stderr)
        return 130
    return 0


def _store():
    # The key-value store torchrun's agent serves to its workers (what init_process_group used).
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=10))
    return store


def _try_store(action) -> object:
    try:
        return action(_store())
    except Exception:  # no store to reach: the run still ends; rank 0 then reports it KILLED
        return None


def _peer_failure(wait_s: float = 2.0) -> str | None:
    """A failed rank's message from the store, waiting briefly for it to be posted."""
    deadline = time.monotonic() + wait_s
    while True:
        found = _try_store(lambda store: store.get(_FAILED_KEY).decode() if store.check([_FAILED_KEY]) else None)
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
