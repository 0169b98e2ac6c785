#!/usr/bin/env bash
# The package works where users install it: build the wheel, install it into a fresh venv outside
# the source tree, and use it from a folder that holds nothing but an experiments.yaml.
#
#   1. a fresh venv gets an in-range torch first (as a user's CUDA environment would have);
#   2. a pip dry run of the wheel into it must leave that torch alone;
#   3. the wheel is installed (exact CI versions from constraints.txt), and from bare folders:
#      `arflare --version`, `arflare validate` of the shipped registry, a smoke run, `arflare compare`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/arflare-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
export ARFLARE_CACHE="$work/cache"  # nothing outside $work is touched
unset MLFLOW_TRACKING_URI
say() { printf '\n== %s\n' "$*"; }

say "build the wheel"
"$python" -m pip wheel --quiet --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/arflare-*.whl)
echo "$wheel"

say "fresh venv with an in-range torch"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
"${pip[@]}" install --quiet -c "$repo/constraints.txt" torch torchvision
before=$("$work/venv/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
echo "torch $before"

say "dry run of the wheel: torch must not change"
"${pip[@]}" install --quiet --dry-run --report "$work/report.json" "$wheel" >/dev/null
"$work/venv/bin/python" - "$work/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
changes = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
assert "torch" not in changes, f"the wheel would replace torch with {changes['torch']}"
print(f"pip would install {len(changes)} packages; torch is not among them")
PY

say "install the wheel"
"${pip[@]}" install --quiet -c "$repo/constraints.txt" "$wheel"
arflare="$work/venv/bin/arflare"
mkdir "$work/shipped" "$work/use"
cd "$work/use"  # no source tree on the path: the venv's copy must be the one imported
"$work/venv/bin/python" -c "import arflare, sys; assert arflare.__file__.startswith('$work/venv'), arflare.__file__; print(arflare.__file__)"
"$arflare" --version

say "validate the shipped registry"
cp "$repo/experiments.yaml" "$work/shipped/"
"$arflare" validate "$work/shipped/experiments.yaml"

say "a smoke run from a folder holding only an experiments.yaml (plus a small synthetic set)"
cat > experiments.yaml <<'YAML'
project: wheel-check
defaults:
  data: {root: data/synthetic/magnetograms, generate_if_missing: false, image_size: 32}
experiments:
  smoke:
    description: a seconds-long run from an installed wheel
    model: {backbone: convnext_atto}
    train: {epochs: 1, batch_size: 8, max_steps_per_epoch: 2, warmup_epochs: 0}
YAML
"$arflare" synth --out data/synthetic --ars 15 --hours 24 --size 32 --quiet
"$arflare" run smoke
"$arflare" compare --metric tss
echo
echo "wheel check passed"
