"""One root for errors a user can fix; the CLI turns any of them into a message and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arflare.cli import main
from arflare.data.shards import ShardFormatError
from arflare.errors import DataError, UsageError
from registry.errors import RegistryError, UserError


@pytest.mark.parametrize("error", [RegistryError, UsageError, DataError, ShardFormatError])
def test_every_user_error_derives_from_the_root(error):
    assert issubclass(error, UserError)


def test_a_data_error_below_the_cli_exits_2_with_its_message(tmp_path, capsys):
    assert main(["index", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err


def test_registry_never_imports_arflare():
    code = ("import sys, registry.errors, registry.loader, registry.compare, registry.search_spec; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'arflare'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
