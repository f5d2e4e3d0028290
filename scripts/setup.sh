#!/usr/bin/env bash
# Install flowforge (editable) with its test tools into the current Python environment.
#
#   scripts/setup.sh            # or: make setup
#   PYTHON=python3.11 scripts/setup.sh
#   FORCE=1 scripts/setup.sh    # reinstall even if everything already imports
#
# torch is installed first and pinned (torch==2.13.0) only when `import torch` fails, so a torch
# you installed yourself (a CUDA build, say) is kept; pip never resolves an unpinned torch.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "setup: torch is not importable; installing torch==2.13.0"
  "$PYTHON" -m pip install "torch==2.13.0"
fi

# Already set up? flowforge must import from this checkout, with every dependency present.
check='
import sys, pathlib
import flowforge, torch, numpy, yaml, tqdm, matplotlib, safetensors, ot, torchdiffeq, sklearn
import mnist1d, PIL, zuko, openmm, openmmtools, rdkit
import pytest, ruff, hypothesis
import importlib.util
assert importlib.util.find_spec("moses") is not None  # the MOSES files of the molsets wheel
root = pathlib.Path(sys.argv[1]).resolve()
sys.exit(0 if pathlib.Path(flowforge.__file__).resolve().is_relative_to(root / "src") else 1)
'
if [[ "${FORCE:-0}" != "1" ]] && "$PYTHON" -c "$check" "$ROOT" >/dev/null 2>&1; then
  echo "setup: flowforge and its dependencies are already installed from $ROOT"
  exit 0
fi

echo "setup: installing flowforge from $ROOT (editable, with the [dev] extra)"
"$PYTHON" -m pip install -e ".[dev]"
# the MOSES SMILES files: the molsets wheel without its (old, pinned) dependencies
"$PYTHON" -m pip install --no-deps "molsets==0.3.1"
"$PYTHON" -c "import flowforge, torch; print('setup: flowforge', flowforge.__version__, 'with torch', torch.__version__)"
