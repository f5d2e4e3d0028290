#!/usr/bin/env bash
# Install the peer libraries that benchmarks/ compares against (the [bench] extra), without ever
# letting pip resolve torch or torchvision.
#
# Why --no-deps: torchcfm requires torchdyn, which requires torchvision and pytorch-lightning; a
# resolver run would replace the CPU-only torch with a CUDA build (and torchvision's registry
# build does not match a CPU-only torch, which breaks the import). Nothing the benchmark imports
# needs them:
#   torchcfm.conditional_flow_matching   torch, numpy, POT (ot), scipy           (flowforge deps)
#   flow_matching.path / .solver         torch, torchdiffeq, tqdm                (flowforge deps)
#   torchdyn.numerics.odeint             torchcde, torchsde, trampoline, attrs   (installed here)
# torchdyn.core.NeuralODE would also need pytorch-lightning: the benchmark calls the solver it
# wraps, torchdyn.numerics.odeint, directly.
# torchgfn 2.4.1 (benchmarks/gfn.py) pins numpy < 2, so it and tensordict go in with --no-deps
# (they run on numpy 2); torch_geometric and linear-attention-transformer, which `import gfn`
# needs, resolve their own dependencies, none of which is torch or numpy.
#
# Usage: bash scripts/bench_setup.sh            (uses `python`; PYTHON=/path/to/python to choose)
set -euo pipefail

PYTHON="${PYTHON:-python}"

torch_before="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
# name and version only: pip pads its columns to the longest name installed
list_before="$("$PYTHON" -m pip list 2>/dev/null | grep -i -E '^torch(vision)? ' | tr -s ' ' || true)"

"$PYTHON" -m pip install --no-deps \
    torchcfm==1.0.7 \
    flow-matching==1.0.10 \
    torchdyn==1.0.6 \
    torchcde==0.2.5 \
    torchsde==0.2.6 \
    trampoline==0.1.2 \
    attrs==26.1.0 \
    torchgfn==2.4.1 \
    tensordict==0.15.3 \
    pyvers==0.2.3 \
    einops==0.8.2 \
    dill==0.4.1
"$PYTHON" -m pip install torch_geometric==2.8.1 linear-attention-transformer==0.19.1

# The peers must import, and torch must be the build we started with.
"$PYTHON" - <<'EOF'
import importlib.util

import flow_matching.path
import flow_matching.solver
import torchcfm.conditional_flow_matching
from torchdyn.numerics import odeint  # noqa: F401
from gfn.gym import HyperGrid  # noqa: F401  (torchgfn)

if importlib.util.find_spec("torchvision") is not None:
    print("warning: torchvision is installed; if `import torchcfm` breaks, pip uninstall it")
print("peers import: torchcfm", torchcfm.__version__, "| flow_matching", flow_matching.__version__)
EOF

torch_after="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
list_after="$("$PYTHON" -m pip list 2>/dev/null | grep -i -E '^torch(vision)? ' | tr -s ' ' || true)"
if [[ "$torch_before" != "$torch_after" || "$list_before" != "$list_after" ]]; then
    echo "error: torch changed ($list_before -> $list_after)" >&2
    exit 1
fi
echo "torch unchanged: $torch_after"
