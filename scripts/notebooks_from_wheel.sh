#!/usr/bin/env bash
# Run every chapter notebook the way a Colab user does: from the *installed wheel*, in an empty folder that
# holds nothing of the repository but the notebooks (no data/, no results/, no helpers/ source beside them).
#
#   bash scripts/notebooks_from_wheel.sh            # all chapters (what CI runs)
#   bash scripts/notebooks_from_wheel.sh 02 04      # some chapters (file-name prefixes)
#   SKIP_NOTEBOOKS=1 / SKIP_CLI=1                   # leave out the notebooks / the command-line smoke runs
#   COURSE_JOBS=1                                   # one notebook at a time (default 2: see below)
#
# Steps: build the course wheel (no network: --no-build-isolation uses the setuptools already installed);
# create a fresh virtualenv; install the wheel into it, not editable; copy notebooks/ alone into an empty
# temporary folder; run nbval there. The fresh virtualenv borrows the *third-party* dependencies (torch,
# transformers, ...) of ./.venv through a .pth file instead of downloading them a second time, so the course
# package itself is the only thing that differs from a plain `pip install <wheel>`; ./.venv's editable
# install of `helpers` is not visible there (.pth files of a borrowed folder are not executed). A check below
# fails the run if `helpers` would be imported from the checkout.
# Offline data come from HELPERS_DATA_DIR (CI: ../shared/data) and the hub stays off, as in .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
[ -x .venv/bin/python ] || { echo "error: run 'bash scripts/course.sh setup' first (no ./.venv)" >&2; exit 2; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HELPERS_SCALE="${HELPERS_SCALE:-small}"
if [ -z "${HELPERS_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export HELPERS_DATA_DIR="$(cd ../shared/data && pwd)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/course-colab.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dist" "$work/run"

# 1. the wheel — from a clean build folder: setuptools reuses ./build/lib, so a module deleted or moved since
# the last build would otherwise still ship; then the wheel's Python files must be exactly the checkout's
rm -rf build
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$work/dist" .
wheel=$(ls "$work"/dist/*.whl)
.venv/bin/python - "$wheel" <<'EOF'
import subprocess, sys, zipfile
shipped = {n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith("helpers/") and n.endswith(".py")}
tracked = set(subprocess.run(["git", "ls-files", "helpers"], capture_output=True, text=True,
                             check=True).stdout.split())
tracked = {n for n in tracked if n.endswith(".py")}
if shipped != tracked:
    sys.exit(f"error: the wheel's modules differ from the checkout's: extra {sorted(shipped - tracked)}, "
             f"missing {sorted(tracked - shipped)}")
EOF

# 2. a fresh virtualenv with the wheel installed (not editable)
.venv/bin/python -m venv --without-pip "$work/venv"
site_new=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
site_old=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$site_old" > "$site_new/_course_dependencies.pth"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-index \
  --target "$site_new" "$wheel"
(cd "$work" && "$work/venv/bin/python" - "$REPO") <<'EOF'
import sys, pathlib, helpers
repo = pathlib.Path(sys.argv[1]).resolve()
where = pathlib.Path(helpers.__file__).resolve()
if repo in where.parents:
    sys.exit(f"error: helpers was imported from the checkout ({where}), not from the wheel")
from importlib import resources
assert resources.files("helpers").joinpath("resources").is_dir(), "package data missing from the wheel"
print("helpers imported from the installed wheel")
EOF

# 3. the notebooks alone, in an empty folder
cp -r notebooks "$work/run/notebooks"
find "$work/run" -name "__pycache__" -prune -exec rm -rf {} +
cd "$work/run/notebooks"
sel=()
for prefix in "$@"; do sel+=($(ls "${prefix}"*.ipynb)); done
[ ${#sel[@]} -gt 0 ] || sel=(.)
# nbval starts each kernel with the interpreter that runs it (the fresh venv has no other kernel spec).
# COURSE_JOBS notebooks at a time (pytest-xdist, a whole notebook per worker), each kernel on one torch thread
# unless OMP_NUM_THREADS says otherwise: at small sizes a notebook is mostly per-operation overhead, so two
# one-thread kernels finish sooner than one two-thread kernel after another (measured: chapters 00 + 02 in 33 s
# against 53 s on two cores).
jobs=${COURSE_JOBS:-2}
parallel=()
threads=()
if [ "$jobs" -gt 1 ] && "$work/venv/bin/python" -c "import xdist" 2>/dev/null; then
  parallel=(-n "$jobs" --dist loadfile)
  threads=("OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}")
fi
if [ "${SKIP_NOTEBOOKS:-0}" != 1 ]; then
  env "${threads[@]}" "$work/venv/bin/python" -m pytest "${sel[@]}" --nbval-lax -p no:cacheprovider \
    --rootdir "$work/run/notebooks" "${parallel[@]}"
fi
# 4. the main commands, from another empty folder, at toy sizes (each must exit 0 and write its output)
if [ "${SKIP_CLI:-0}" != 1 ]; then
  mkdir -p "$work/cli" && cd "$work/cli"
  py="$work/venv/bin/python"
  "$py" -m helpers safeedit-eval --data built --limit 1 --max-new-tokens 8 --out eval.json
  "$py" -m helpers safeedit-build --out build --per-category 1 --attacks 1 --max-new-tokens 8 \
    --question-tokens 8 --question-rounds 0 --no-plot
  "$py" -m helpers llm2llm --dataset trec --seed-size 6 --iterations 1 --test-size 8 --epochs 1 \
    --train-layers 2 --out llm2llm_trec
  for f in eval.json build/README.md llm2llm_trec/summary.json; do
    [ -s "$f" ] || { echo "error: $f was not written" >&2; exit 1; }
  done
  echo "CLI from an empty folder: safeedit-eval, safeedit-build, llm2llm --dataset trec passed"
fi
# 5. nothing may have been written into the repository by the run
cd "$REPO"
if [ -n "$(git status --porcelain --untracked-files=all -- helpers notebooks 2>/dev/null)" ]; then
  git status --short -- helpers notebooks
  echo "error: the notebook run wrote into the checkout" >&2
  exit 1
fi
