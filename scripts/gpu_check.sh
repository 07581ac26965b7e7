#!/usr/bin/env bash
# Every GPU check of nfield in one call: the gpu-marked tests, then every benchmark in its short
# form, each step under its own timeout, writing logs, JSON and one summary table to OUT_DIR.
#
#   scripts/gpu_check.sh OUT_DIR [--budget SECONDS] [--dry-run]
#
# On a CUDA machine with no network: runs from the repository root's sources (PYTHONPATH), and
# installs the wheels found in .whl/ first when there are any (the packages the GPU image lacks,
# fetched beforehand: trimesh, tyro, libigl, pypng, soundfile, viser and what they need). Tests and
# benchmarks that read the shared data beside the repository (../shared/data) skip it when absent.
# --budget (default 540 s, leaving a 10-minute command room for the wheels and the summary) is
# shared between the steps in fixed proportions, so one slow step cannot eat the others'
# time; a step past its share is stopped and reported as a timeout. --dry-run runs the same steps on
# the CPU at tiny sizes (the benchmarks' `tiny` scale, the Triton kernels in Triton's interpreter,
# the gpu tests collected and skipped), so a broken path or flag shows up without a GPU.
# Exit status: 0 when every step passed, 1 otherwise (the summary says which), 2 for bad usage.
set -uo pipefail

usage() { echo "usage: scripts/gpu_check.sh OUT_DIR [--budget SECONDS] [--dry-run]" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR=""
BUDGET=540
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) [ $# -ge 2 ] || usage; BUDGET="$2"; shift 2 ;;
    --budget=*) BUDGET="${1#--budget=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT_DIR" ] || usage; OUT_DIR="$1"; shift ;;
  esac
done
[ -n "$OUT_DIR" ] || usage
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check: --budget must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac
[ "$BUDGET" -ge 60 ] || { echo "gpu_check: --budget must be at least 60 seconds, got $BUDGET" >&2; exit 2; }
mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 2; }
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "$DRY_RUN" = 1 ]; then
  SCALE=tiny
  SANITIZE="$PYTHON -m tests.kernels.kernel_checks mlp --size small"
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
else
  SCALE=gpu-short
  # memcheck names the kernel and address of any out-of-bounds access; without PyTorch's caching
  # allocator every tensor is its own allocation, so an access past a tensor is caught too
  SANITIZE="env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1"
  SANITIZE="$SANITIZE $PYTHON -m tests.kernels.kernel_checks mlp composite march grid mesh_distance --device cuda --size small"
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: no CUDA device here; use --dry-run on a CPU machine" >&2; exit 1; }
  if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/nfield-site "$ROOT"/.whl/*.whl \
      || { echo "gpu_check: installing the wheels in .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/nfield-site"
  fi
fi
cd "$ROOT"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
"$PYTHON" -m nfield.cli info > "$OUT_DIR/info.txt" 2>&1

# name, share of the budget in percent, command (run from the repository root)
STEPS=(
  "pytest|36|$PYTHON -m pytest -m gpu -q -rfE --tb=short --timeout 150 -p no:cacheprovider --junitxml=$OUT_DIR/pytest.xml tests"
  "sanitizer|6|$SANITIZE"
  "kernels|10|$PYTHON scripts/bench_kernels.py --scale $SCALE --out $OUT_DIR/bench_kernels.json"
  "image|6|$PYTHON scripts/bench_image.py --scale $SCALE --models relu-pe siren hash dense --out $OUT_DIR/bench_image.json"
  "sdf|7|$PYTHON scripts/bench_sdf.py --scale $SCALE --out $OUT_DIR/bench_sdf.json"
  "nerf|10|$PYTHON scripts/bench_nerf.py --scale $SCALE --out $OUT_DIR/bench_nerf.json"
  "kilonerf|10|$PYTHON scripts/bench_kilonerf.py --scale $SCALE --out $OUT_DIR/bench_kilonerf.json"
  "families|5|$PYTHON scripts/bench_families.py --scale $SCALE --out $OUT_DIR/bench_families.json"
  "viewer|6|$PYTHON scripts/bench_viewer.py --scale $SCALE --page simulated --out $OUT_DIR/bench_viewer.json"
  "scale|4|$PYTHON scripts/bench_scale.py --scale $SCALE --models siren --out $OUT_DIR/bench_scale.json"
)
: > "$OUT_DIR/steps.tsv"
STARTED=$(date +%s)
# run_step NAME LIMIT COMMAND: one step under its time limit; its result goes to OUT_DIR/NAME.result
run_step() {
  local name="$1" limit="$2" command="$3" begin status seconds result
  begin=$(date +%s)
  # SIGINT first: pytest then still prints its failures so far, a benchmark its traceback
  timeout --signal=INT --kill-after=15 "$limit" bash -c "$command" > "$OUT_DIR/$name.log" 2>&1
  status=$?
  seconds=$(( $(date +%s) - begin ))
  case $status in
    0) result=pass ;;
    124|130|137) result=timeout ;;
    *) result=fail ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$result" "$seconds" "$limit" > "$OUT_DIR/$name.result"
  echo "   $name: $result in ${seconds} s ($OUT_DIR/$name.log)"
  [ "$result" = pass ] || tail -n 15 "$OUT_DIR/$name.log" | sed "s/^/   | $name: /"
}
# On the GPU the steps run one after another (each has the device to itself, and its timings mean
# something). The dry run's steps are small and single-threaded: two at a time, one thread each.
# The dry run starts its longest steps first, so that two short ones end it rather than one long one.
JOBS=1
LAUNCH=("${STEPS[@]}")
if [ "$DRY_RUN" = 1 ]; then
  JOBS=2 && export OMP_NUM_THREADS=1
  LAUNCH=()
  for first in scale sdf families kilonerf kernels viewer image nerf pytest sanitizer; do
    for step in "${STEPS[@]}"; do [ "${step%%|*}" = "$first" ] && LAUNCH+=("$step"); done
  done
  [ "${#LAUNCH[@]}" = "${#STEPS[@]}" ] || { echo "gpu_check: the dry run's launch order misses a step" >&2; exit 2; }
fi
for step in "${LAUNCH[@]}"; do
  IFS='|' read -r name share command <<< "$step"
  limit=$(( BUDGET * share / 100 ))
  echo "== $name (limit ${limit} s): $command"
  if [ "$JOBS" = 1 ]; then
    run_step "$name" "$limit" "$command"
  else
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    run_step "$name" "$limit" "$command" &
  fi
done
wait
for step in "${STEPS[@]}"; do
  IFS='|' read -r name _ _ <<< "$step"
  cat "$OUT_DIR/$name.result" >> "$OUT_DIR/steps.tsv" && rm -f "$OUT_DIR/$name.result"
done
echo "== all steps in $(( $(date +%s) - STARTED )) s"
"$PYTHON" scripts/gpu_check_summary.py "$OUT_DIR" $([ "$DRY_RUN" = 1 ] && echo --dry-run)
