"""The DDP ranks of an ``arflare submit --nproc N`` job: launched by the job, entered here by each rank.

The job's task (:class:`arflare.submitting.RunJob`) starts N ranks through torchrun on its
node, exactly as ``arflare run --nproc N`` does (:func:`arflare.distributed.launch`); each rank
runs ``python -m arflare._job_rank JOB`` with the job and its scheduler tags as JSON, and trains
the job's run like ``arflare run`` (rank 0 owns the MLflow run and the checkpoints).

Preemption belongs to the task: on the scheduler's warning signal submitit checkpoints and
requeues the job, then exits; torchrun's agent stops the ranks with SIGTERM on the way out, and
SIGTERM ends the run KILLED with its resume state kept. The ranks therefore ignore the warning
signal themselves, whether the scheduler sends it to every process of the job or to the task only.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from arflare.submitting import RunJob


def launch_ranks(job: RunJob, tags: Mapping[str, str]) -> int:
    """Train ``job``'s run in ``job.nproc`` DDP processes on this node.

    Returns:
        ``arflare run --nproc``'s exit code: 0, 1 (a rank failed), 2 (bad input) or 130 (stopped).
    """
    from arflare.distributed import launch  # torch: the job trains

    return launch(job.nproc, [json.dumps({"job": asdict(job), "tags": dict(tags)})], module=__name__)


def preemption_signal() -> signal.Signals:
    """The signal submitit asks the scheduler to send before a preemption or the time limit (USR2 by default)."""
    import submitit

    return getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)


def main(argv: Sequence[str]) -> int:
    """One rank: train the job's run (``argv``: the JSON :func:`launch_ranks` passes); the exit code."""
    from arflare.cli import guarded

    signal.signal(preemption_signal(), signal.SIG_IGN)  # the task requeues and stops this rank (module doc)
    payload = json.loads(argv[0])
    job = RunJob(**{**payload["job"], "sets": tuple(payload["job"]["sets"])})
    return guarded(lambda: job.train(payload["tags"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
