"""What a planned run needs to train in several processes, checked before any process starts.

Torch-free on purpose: ``arflare run --nproc N`` checks here before torchrun starts its
processes, and ``arflare submit --nproc N`` checks here before a job reaches the scheduler
(submitting imports no torch). The ranks check again when they start
(:mod:`arflare.running`), so a plain ``torchrun … -m arflare run`` is covered too.
"""

from __future__ import annotations

from arflare.errors import UsageError


def check_plans(plans, world_size: int) -> None:
    """Refuse, before anything starts, planned runs (``registry.loader.Run``) that cannot train in ``world_size`` processes.

    Raises:
        UsageError: naming every run and problem.
    """
    problems = [f"{run.name}: {problem}" for run in plans for problem in check_spec(run.spec, world_size)]
    if problems:
        raise UsageError(f"cannot train in {world_size} processes: " + "; ".join(problems))


def check_spec(spec, world_size: int) -> list[str]:
    """What stops ``spec`` from training in ``world_size`` processes (empty when nothing does)."""
    if world_size == 1:
        return []
    problems = []
    if spec.model.kind != "cnn":
        problems.append(f"model.kind={spec.model.kind!r} fits boosted trees in one process; run it without --nproc")
    per_rank = 2 * world_size if spec.train.mixup.enabled else world_size  # Mixup pairs samples within a rank's batch
    if spec.train.batch_size % per_rank:
        problems.append(f"train.batch_size={spec.train.batch_size} is the global batch and must split evenly over "
                        f"{world_size} processes{' in pairs (Mixup)' if spec.train.mixup.enabled else ''}; "
                        f"use a multiple of {per_rank}")
    return problems
