"""``python -m arflare``: the ``arflare`` command (what ``torchrun -m arflare run NAME`` starts)."""

import sys

from arflare.cli import main

sys.exit(main())
