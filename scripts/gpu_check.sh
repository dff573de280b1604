#!/usr/bin/env bash
# The GPU check: the CUDA path in one pass on a machine with an NVIDIA GPU, in at most 8 minutes, every result under $OUT.
#
# First, before anything is installed, `nvidia-smi -L` must list a GPU: without one the check says so and exits 2 at
# once. Then each step runs under its own time limit, within an overall budget; a step that fails or runs out of time
# is recorded and the next one runs:
#   nvidia-smi    the GPU, its driver, memory and clocks
#   setup         a CUDA build of torch (the machine's Python's own when it has one; else torch as pinned in
#                 constraints.txt from the package index), then the packages that Python lacks (scripts/gpu_wheels.txt):
#                 from the wheels of `make gpu-wheels` when they came along, else from the index; into a folder of
#                 their own, nothing of the machine's changed
#   bench-train   scripts/bench_train.py on the GPU: a training step against the bare forward and backward
#   bench-search  scripts/bench_search.py on the GPU: a search step against its floor; K = 10 generators side by side
#                 against 10 separate searches (ResNet-18 included)
#   nbdev-test    nbdev_test --flags cuda: every notebook, on the GPU (the library's default device), cells flagged
#                 `#| cuda` included, `#| slow` ones not
#   paper-run     one `paper`-preset run (ResNet-18, trigger 170) on the CIFAR-10 subset of `make gpu-data`, its
#                 repetitions cut so that it fits (GPU_CHECK_RUN_ARGS); its metrics.json and per-stage times
# $OUT then holds summary.md (every step's outcome, the benchmark tables, the run's stage times), one log per step
# and the run's metrics.json (or, when the run stopped short, its notebook as far as it got): 8 files.
# Exit status: 0 when every step passed, 1 when one failed, 2 without a GPU.
#
# Run it from anywhere in the checkout, with .cache/gpu-data and .cache/gpu-wheels beside it (`make gpu-data
# gpu-wheels` where the data and the index are):  OUT=/some/folder bash scripts/gpu_check.sh
# Settings (environment): OUT (default outputs/gpu-check), GPU_CHECK_PYTHON (default python3), GPU_CHECK_BUDGET
# (seconds for all the steps, default 465), GPU_CHECK_DATA, GPU_CHECK_WHEELS, GPU_CHECK_RUN_ARGS (the paper run's
# extra options; set it empty for the preset as it is), GPU_CHECK_NOTEBOOKS (nbdev_test's --path; default all),
# GPU_CHECK_NVIDIA_SMI (the nvidia-smi to ask).
# To rehearse the steps on a machine without a GPU (nothing it measures means anything): GPU_CHECK_ALLOW_CPU=1
# GPU_CHECK_DEVICE=cpu, with a python whose packages are to be completed like the GPU machine's.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-outputs/gpu-check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "gpu_check: cannot write to OUT=$OUT" >&2; exit 2; }
SUMMARY=$OUT/summary.md
PY=${GPU_CHECK_PYTHON:-python3}
SMI=${GPU_CHECK_NVIDIA_SMI:-nvidia-smi}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-465}
DATA=$(realpath -m "${GPU_CHECK_DATA:-.cache/gpu-data}")
WHEELS=$(realpath -m "${GPU_CHECK_WHEELS:-.cache/gpu-wheels}")
# a tenth of the search steps, 2 of the 10 reversals, 10 of the 40 clean epochs: the rest of the preset as it is
RUN_ARGS=${GPU_CHECK_RUN_ARGS-"--clean-epochs 10 --detect-steps 313 --search-steps 313 --baseline-runs 2"}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
FAILED=()

{ echo "# GPU check"; echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (with changes)'), budget ${BUDGET}s"
  echo; } >"$SUMMARY"

no_gpu() {   # the one message a machine without a usable GPU gets, in the summary too; exit 2
  echo "no CUDA device: this check needs a GPU ($1)" | tee -a "$SUMMARY" >&2
  exit 2
}

# --- the GPU, before anything is installed ---------------------------------------------------------------------------
if [[ -z ${GPU_CHECK_ALLOW_CPU:-} ]]; then
  command -v "$SMI" >/dev/null 2>&1 || no_gpu "$SMI not found"
  listed=$(timeout 20 "$SMI" -L 2>&1) || no_gpu "$SMI -L failed: $(head -1 <<<"$listed")"
  grep -q '^GPU ' <<<"$listed" || no_gpu "$SMI -L lists none"
  echo "$listed" | sed 's/^/    /' >>"$SUMMARY"; echo >>"$SUMMARY"
fi

WORK=$(mktemp -d -t mesa-nb-gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT   # the packages and the run folder: what matters is under $OUT
PREFIX=$WORK/packages
export PYTHONPATH="$PREFIX/torch:$PREFIX/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PREFIX/site/bin:$PATH" JUPYTER_PATH="$PREFIX/site/share/jupyter" MPLBACKEND=Agg PYTHONUNBUFFERED=1
NOTEBOOKS=${GPU_CHECK_NOTEBOOKS:-}   # one notebook or folder for nbdev_test (default: all)
export PY SMI DEVICE DATA WHEELS PREFIX WORK ROOT OUT RUN_ARGS NOTEBOOKS
unset MESA_NB_DATA    # the notebooks' CIFAR cells expect the full data set; the run is given the subset by name

echo "| step | outcome | seconds |" >>"$SUMMARY"
echo "|---|---|---|" >>"$SUMMARY"

step() {   # step NAME MAX_SECONDS FUNCTION: FUNCTION under `timeout`, its output in $OUT/NAME.log; returns its status
  local name=$1 max=$2 fn=$3 left limit t0 rc outcome
  left=$((DEADLINE - $(date +%s)))
  limit=$((max < left ? max : left))
  if ((limit < 10)); then
    echo "| $name | skipped: the budget was spent | 0 |" >>"$SUMMARY"; FAILED+=("$name"); return 124
  fi
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "set -o pipefail; $(declare -f "$fn"); $fn" >"$OUT/$name.log" 2>&1 </dev/null
  rc=$?
  case $rc in
    0) outcome=passed ;;
    124|137) outcome="stopped at its limit of ${limit}s" ;;
    *) outcome="failed (exit $rc): $(grep -v '^\s*$' "$OUT/$name.log" | tail -1 | cut -c1-200 | tr '|' '/')" ;;
  esac
  echo "| $name | $outcome | $(($(date +%s) - t0)) |" >>"$SUMMARY"
  ((rc == 0)) || FAILED+=("$name")
  return $rc
}

smi() {
  "$SMI"
  "$SMI" --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
}

setup() {
  # torch: the machine's own when it sees the GPU; a CUDA build that does not has no GPU to see (status 3)
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "torch: the machine's"
  elif [[ -n ${GPU_CHECK_ALLOW_CPU:-} ]] && "$PY" -c 'import torch'; then
    echo "torch: the machine's, without CUDA (a rehearsal)"
  elif "$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)') is a CUDA build that sees no GPU"; exit 3
  else
    pin=$(grep '^torch==' "$ROOT/constraints.txt")
    echo "installing $pin (the index's build for this machine) into $PREFIX/torch"
    "$PY" -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 20 --target "$PREFIX/torch" "$pin" || exit 1
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' || exit $?
  fi
  # the packages the machine lacks, without their dependencies (the machine's serve)
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile --target "$PREFIX/site" "$WHEELS"/*.whl || exit 1
  else
    echo "no wheels in $WHEELS: installing from the index"
    grep -v '^torch==' "$ROOT/constraints.txt" >"$WORK/constraints.txt"
    "$PY" -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 20 --no-deps --target "$PREFIX/site" \
      -c "$WORK/constraints.txt" $(grep -v '^#' "$ROOT/scripts/gpu_wheels.txt") || exit 1
  fi
  "$PY" - "$DEVICE" <<'EOF'
import platform, sys
import torch, nbdev, papermill, ipykernel, execnb, jupytext, mesa_nb
from mesa_nb.core import as_device, environment
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}; nbdev {nbdev.__version__}, papermill {papermill.__version__}; mesa_nb from {mesa_nb.__file__}")
print(environment(as_device(sys.argv[1])))
EOF
}

bench_train() { "$PY" scripts/bench_train.py --device "$DEVICE"; }

bench_search() { "$PY" scripts/bench_search.py --device "$DEVICE"; }

nbdev_tests() {
  # one thread per notebook process: 12 of them share 16 cores, the GPU does the work
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nbdev_test --flags cuda --n_workers 12 --timing --do_print ${NOTEBOOKS:+--path $NOTEBOOKS}
}

paper_run() {
  [[ -d $DATA/cifar-10-batches-py ]] || { echo "no CIFAR-10 subset in $DATA: make gpu-data, and bring .cache/gpu-data along"; exit 1; }
  # shellcheck disable=SC2086
  "$PY" -c 'import sys; from mesa_nb.cli import main; sys.exit(main())' run --preset paper --dataset cifar10 --data-dir "$DATA" \
    --device "$DEVICE" --out "$WORK/runs" $RUN_ARGS || exit 1
  cp "$WORK"/runs/*/metrics.json "$OUT/metrics.json"
}

step nvidia-smi 20 smi
step setup 90 setup
case $? in
  0) ;;
  3) no_gpu "torch sees none: $(tail -1 "$OUT/setup.log")" ;;
  *) echo "setup failed: the other steps need it" | tee -a "$SUMMARY" >&2; exit 1 ;;
esac
step bench-train 45 bench_train
step bench-search 75 bench_search
step nbdev-test 120 nbdev_tests
step paper-run $BUDGET paper_run
# a run stopped short: the notebook as far as it got (papermill saves it after every cell), for where the time went
[[ -s $OUT/metrics.json ]] || cp "$WORK"/runs/*/run.ipynb "$OUT/run.ipynb" 2>/dev/null

{ echo
  for b in bench-train bench-search; do
    [[ -s $OUT/$b.log ]] || continue
    echo "## $b"; echo; grep -E '^(\||\(|device )' "$OUT/$b.log"; echo
  done
  if [[ -s $OUT/metrics.json ]]; then
    echo "## paper-run (options: ${RUN_ARGS:-none})"; echo
    "$PY" - "$OUT/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print("| stage | seconds |\n|---|---|")
for k, v in m.get("timing", {}).items(): print(f"| {k} | {v:.1f} |")
EOF
  fi
  echo
  if ((${#FAILED[@]})); then echo "failed: ${FAILED[*]}"; else echo "every step passed"; fi
} >>"$SUMMARY"
cat "$SUMMARY"
((${#FAILED[@]} == 0))
