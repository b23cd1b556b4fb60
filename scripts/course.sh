#!/usr/bin/env bash
# One entry point for a fresh machine with Python >= 3.10 and pip (no Hugging Face hub needed):
#   bash scripts/course.sh run    # the main job: every notebook in small mode on the embedded model -> results/summary.md
#   bash scripts/course.sh test   # the test suite (exactly what CI runs): unit tests + notebooks from the wheel
#   bash scripts/course.sh setup  # only the install steps (used by .ci/run)
# Both create ./.venv on first use and install the course package into it.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
case "$what" in run|test|setup) ;; *) echo "usage: bash scripts/course.sh run|test|setup" >&2; exit 2 ;; esac

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pipq() { python -m pip install -q --disable-pip-version-check "$@"; }
if ! python -c "import helpers, torch, nbval, xdist" 2>/dev/null || [ "${COURSE_REINSTALL:-0}" = 1 ] || [ -n "${CI:-}" ]; then
  pipq --upgrade pip
  # torch first and pinned: an unpinned torch pulls a multi-GB CUDA build on Linux.
  python -c "import torch" 2>/dev/null || pipq "torch==${COURSE_TORCH_VERSION:-2.13.0}"
  pipq -e ".[dev,serving]"   # serving: `transformers serve`, for the --backend test against a real server
fi

# Data: the course's shared data folder when it sits beside the repo; otherwise loaders use the hub.
if [ -z "${HELPERS_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export HELPERS_DATA_DIR="$(cd ../shared/data && pwd)"
fi
export HELPERS_SCALE="${HELPERS_SCALE:-small}"
python -m helpers prepare-model   # converts the embedded model once (~1 min), then a no-op
python -m helpers info

if [ "$what" = setup ]; then
  exit 0
elif [ "$what" = run ]; then
  python -m helpers run-all
else
  # The test command (README): the unit tests on the editable install, then every notebook re-executed by
  # nbval the way Colab runs it (the built wheel in a fresh venv, the notebooks alone in an empty folder).
  # Two tests at a time with pytest-xdist, one torch thread each (measured on 2 cores: 340 s against 513 s one
  # at a time with both threads); the same two lines as .ci/run.
  OMP_NUM_THREADS=1 python -m pytest tests -p no:cacheprovider -n 2 --dist worksteal
  bash scripts/notebooks_from_wheel.sh
fi
