#!/usr/bin/env bash
# Create the virtual environment and install the project with the given extras.
# Idempotent: re-runs only when pyproject.toml changed. Usage: scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${1:-cpu,all}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed-$(echo "$EXTRAS" | tr ',' '-')"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml ]]; then
  exit 0
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" --version))" >&2
  exit 1
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# -qq: errors only. With -q, setuptools' editable build prints a 10-line "Editable
# installation" warning on every fresh set-up (about flat layouts; ours is one on purpose).
"$VENV/bin/python" -m pip install -qq -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",dev,"* ]]; then
  # The torch export test needs torch 2.13.0 CPU. Take it only from a local wheel: the
  # registry's default build drags in gigabytes of CUDA packages.
  if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    if ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1; then
      "$VENV/bin/python" -m pip install -q --find-links /opt/wheels "torch==2.13.0+cpu" \
        || echo "note: torch not installed; the export test will be skipped" >&2
    else
      echo "note: no local torch 2.13.0 CPU wheel; the export test will be skipped" >&2
    fi
  fi
fi
touch "$stamp"
