#!/usr/bin/env bash
# Sets up a fresh machine in ./.venv: torch (pinned CPU/CUDA wheel), this package, and the embedded
# default dataset (Fashion-MNIST, Debian package dataset-fashion-mnist).
#   ./setup.sh        runtime only
#   ./setup.sh test   + test extras (pytest, hypothesis, the fastervit oracle, ruff, mypy) and ray, and the
#                     Debian packages the tests need (chromium, chromium-driver, postgresql): what CI runs
# Debian packages are installed with apt-get as root, or with sudo.
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
# Debian packages: the dataset always; for the tests also Chromium + chromedriver (tests/nas/test_reports_browser.py
# renders every report kind headless) and the PostgreSQL server binaries (the RDB fault-injection test of
# tests/nas/test_reliability.py starts its own server; nothing is started here). Installed as root or with sudo.
fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
need=()
[ -f "$fmnist" ] || need+=(dataset-fashion-mnist)
if [ "${1:-}" = "test" ]; then
  { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || need+=(chromium chromium-driver)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" = none ]; then
    echo "setup: not root and no sudo: cannot install ${need[*]}" >&2
  else
    echo "setup: installing ${need[*]} (apt-get${sudo:+ with sudo}; a few minutes)"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
[ -f "$fmnist" ] || echo "setup: Fashion-MNIST is not installed; run 'apt-get install dataset-fashion-mnist' or pass --data-dir" >&2
if [ "${1:-}" = "test" ]; then
  { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } ||
    echo "setup: Chromium is not installed; the report browser test needs 'apt-get install chromium chromium-driver'" >&2
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 ||
    echo "setup: PostgreSQL is not installed; the PostgreSQL fault test needs 'apt-get install postgresql'" >&2
fi
echo "setup: ready (.venv, torch $(python -c 'import torch; print(torch.__version__)'))"
