"""A torchrun entry script for the DDP tests: ``arflare`` with a fault injected on rank 1.

``ARFLARE_TEST_FAULT=nan`` makes rank 1's training loss NaN; ``=error`` makes it raise. Run as
``torchrun --standalone --nproc-per-node 2 tests/arflare/_ddp_entry.py run NAME ...`` (which
also shows that a plain torchrun command line works).
"""

import os
import sys

import torch

import arflare.builders as builders
from arflare.cli import main


class _Faulty(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, fault: str) -> None:
        super().__init__()
        self.inner, self.fault = inner, fault

    def forward(self, logits, target):
        loss = self.inner(logits, target)
        if torch.is_grad_enabled():  # training steps only
            if self.fault == "error":
                raise ValueError("injected fault on rank 1")
            return loss * float("nan")
        return loss


_fault = os.environ.get("ARFLARE_TEST_FAULT")
if _fault and os.environ.get("RANK") == "1":
    _real = builders.build_loss_from_spec
    builders.build_loss_from_spec = lambda spec: _Faulty(_real(spec), _fault)

sys.exit(main())
