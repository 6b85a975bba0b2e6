#!/usr/bin/env bash
# Create ./.venv and install sdpose-edge with the converter and test extras.
# torch/torchvision are the matched CPU-capable pair that pip takes from this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e '.[convert,dev,remote,serve]'
.venv/bin/python -c "import openvino, torch, diffusers, nncf, cv2; print('sdpose-edge environment ready:', 'openvino', openvino.__version__, 'torch', torch.__version__)"
