#!/usr/bin/env bash
# Sets up a fresh machine in ./.venv: torch (pinned CPU/CUDA wheel), this package, and the embedded
# default dataset (Fashion-MNIST, Debian package dataset-fashion-mnist).
#   ./setup.sh        runtime only
#   ./setup.sh test   + test extras (pytest, hypothesis, the fastervit oracle) and ray
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "test" ] && extras="[test,ray]"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! python -c "import torch, torchvision" 2>/dev/null; then
  python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "^WARNING: Location" || true
fi
python -m pip install -q -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, timm, optuna, search_spaces, evaluators, nas" || { echo "setup: install failed" >&2; exit 1; }
fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fmnist" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  [ -f "$fmnist" ] || echo "setup: Fashion-MNIST is not installed; run 'apt-get install dataset-fashion-mnist' or pass --data-dir" >&2
fi
echo "setup: ready (.venv, torch $(python -c 'import torch; print(torch.__version__)'))"
