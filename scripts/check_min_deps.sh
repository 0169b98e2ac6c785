#!/usr/bin/env bash
# The lower bounds in pyproject.toml are real: install every direct dependency at the OLDEST
# version its range allows (uv's --resolution lowest-direct) and run the test suite against it.
#
# torch and torchvision are the exception: their old builds are multi-GB CUDA wheels, so they stay
# at the versions of constraints.txt and their lower bounds are not exercised here (see README).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=${MINDEPS_VENV:-"$repo/.venv-mindeps"}
say() { printf '\n== %s\n' "$*"; }

say "venv $work with torch from constraints.txt"
test -x "$work/bin/python" || "$python" -m venv "$work"
"$work/bin/python" -m pip install --quiet --upgrade pip uv
"$work/bin/python" -m pip install --quiet -c "$repo/constraints.txt" torch torchvision
grep -E '^(torch|torchvision)==' "$repo/constraints.txt" > "$work/torch-pins.txt"

say "every other direct dependency at its lower bound"
"$work/bin/python" -m uv pip install --quiet --python "$work/bin/python" --resolution lowest-direct \
    -c "$work/torch-pins.txt" -e "$repo[test]"
"$work/bin/python" -m pip list --format freeze | grep -i -E '^(timm|mlflow|optuna|pydantic|pyyaml|pandas|pyarrow|scikit-learn|matplotlib|numpy|pillow|tqdm|pytest|torch|torchvision)=='

say "the test suite"
cd "$repo"
"$work/bin/python" -m pytest -q -x -p no:cacheprovider
