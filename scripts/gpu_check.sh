#!/usr/bin/env bash
# Every GPU check of nfield, the figure that matters most first, each step under its own time limit.
#
#   scripts/gpu_check.sh OUT_DIR [--only STEPS] [--budget SECONDS] [--archive FILE] [--dry-run]
#   scripts/gpu_check.sh --prepare
#
# Steps, in this order (--only takes a comma-separated list of steps or groups, e.g. --only nerf,tests):
#   nerf                 the headline: ngp on an 800x800 Blender-format scene, PSNR/SSIM on 5 held-out
#                        views at 15, 60 and 180 s of training, rays/s, one 800x800 render's fps
#   tests-nerf, tests-sdf, tests-distill, tests-grid (every kernel's large check), tests-kilonerf-segment
#                        (group "tests") the gpu tests that never passed on a GPU, each in its own process
#                        so one crash cannot hide the rest; tests-rest (after sdf), the ones that passed on the H200
#   mlp                  the fused MLP's launch configurations, each in a child process, then
#                        compute-sanitizer memcheck on each; the verdict the later steps use
#   kernels              points/s of every kernel against PyTorch (hash grid fwd+bwd on a random gradient)
#   sdf                  NGLOD sphere tracing at 1280x720: previous tracer, PyTorch path, fused kernel
#   sanitizer            the kernel checks under compute-sanitizer memcheck
#   kilonerf, families, viewer, scale, image
#                        the other benchmarks' short forms
# A step's time limit is what its own start-up and work need (listed below with what each was sized
# on), not a share: a step that would not fit in what is left of --budget (default 540 s, leaving a
# 10-minute command room for the wheels and the summary) is not started, and the summary prints the
# --only that finishes the rest in a second call. The summary prints the headline table first,
# against the targets. Exit status: 0 when every step that ran passed, 1 otherwise, 2 for bad usage.
#
# Carrying what a GPU slot needs (run --prepare on the CPU machine first, from the repository root):
#   .gpu_carry/scene800/   the headline's scene, ray cast on the CPU (about 6 MB; 85 s on 2 cores)
#   .whl/                  wheels of nfield's dependencies a CUDA PyTorch image lacks (trimesh, tyro,
#                          libigl, pypng, soundfile, viser, OpenEXR and theirs; about 30 MB), for
#                          CPython 3.12 on x86-64; installed into /tmp/nfield-site when present
# Both are git-ignored; hand them to the GPU machine with the working tree (the device tool's
# carry: [".whl", ".gpu_carry"]). --archive FILE writes OUT_DIR as one .tar.gz at the end (for a
# machine that hands back few files), beside summary.txt and summary.json. Triton's compile cache is not carried: every launch of the NeRF
# path compiles for sm_90 in 0.2 to 0.7 s (tests/kernels/hopper_compile.py), seconds in all.
# --dry-run runs the same steps on the CPU at tiny sizes (the Triton kernels in Triton's
# interpreter, the gpu tests collected and skipped), so a broken path or flag shows up without a GPU.
set -uo pipefail

usage() { echo "usage: scripts/gpu_check.sh OUT_DIR [--only STEPS] [--budget SECONDS] [--archive FILE] [--dry-run] | --prepare" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT_DIR=""
BUDGET=540
DRY_RUN=0
ONLY=""
ARCHIVE=""
PREPARE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) [ $# -ge 2 ] || usage; BUDGET="$2"; shift 2 ;;
    --budget=*) BUDGET="${1#--budget=}"; shift ;;
    --only) [ $# -ge 2 ] || usage; ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#--only=}"; shift ;;
    --archive) [ $# -ge 2 ] || usage; ARCHIVE="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --prepare) PREPARE=1; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT_DIR" ] || usage; OUT_DIR="$1"; shift ;;
  esac
done

# ------------------------------------------------------------------------------------ --prepare
# nfield's dependencies that a CUDA PyTorch image provides (their wheels are dropped after resolving)
PROVIDED=" numpy torch triton scipy pillow matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
packaging imageio scikit-image lazy-loader networkx tifffile tqdm safetensors typing-extensions jinja2 markupsafe
filelock fsspec sympy mpmath rich pygments markdown-it-py mdurl pyyaml requests urllib3 idna certifi charset-normalizer "
if [ "$PREPARE" = 1 ]; then
  [ -z "$OUT_DIR" ] || usage
  cd "$ROOT" || exit 2
  mkdir -p .gpu_carry .whl
  if [ ! -f .gpu_carry/scene800/transforms_test.json ]; then
    "$PYTHON" -m scenes.synthetic primitives .gpu_carry/scene800 --size 800 --train 100 --val 1 --test 5 \
      || { echo "gpu_check: generating the headline scene failed" >&2; exit 1; }
  fi
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    trimesh tyro libigl pypng soundfile viser OpenEXR || { echo "gpu_check: downloading the wheels failed" >&2; exit 1; }
  PROVIDED=" $(echo $PROVIDED) "
  for wheel in .whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr '_' '-' | tr 'A-Z' 'a-z')
    case "$PROVIDED" in *" $name "*) rm -f "$wheel" ;; esac
  done
  echo "prepared: .gpu_carry ($(du -sh .gpu_carry | cut -f1)), .whl ($(du -sh .whl | cut -f1)); carry both with the working tree"
  exit 0
fi

[ -n "$OUT_DIR" ] || usage
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check: --budget must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac
[ "$BUDGET" -ge 60 ] || { echo "gpu_check: --budget must be at least 60 seconds, got $BUDGET" >&2; exit 2; }

# name|group|limit on a GPU (s)|limit in the dry run (s)|command. Limits: the step's measured or
# estimated start-up (Python, torch and CUDA: about 10 s on the H200; pytest's collection another 5)
# plus its work, with room; the dry run's are the CPU's (two steps at a time, one thread each).
define_steps() {  # define_steps OUT: the steps, writing into OUT
  local out="$1"
  if [ "$DRY_RUN" = 1 ]; then
    SCALE=tiny
    HEADLINE="$PYTHON scripts/bench_nerf.py --scale tiny --models ngp"
    MLP_PROBE="$PYTHON -m nfield.kernels.mlp_variants --device cpu"
    SANITIZE="$PYTHON -m tests.kernels.kernel_checks mlp"
    TRACING="$PYTHON scripts/bench_sphere_tracing.py --scale tiny --paths previous torch"
    PAPERS="$PYTHON scripts/reproduce_papers.py --scale tiny --rows siren ff-fourier"
  else
    SCALE=gpu-short
    HEADLINE="$PYTHON scripts/bench_nerf.py --scale headline"
    [ -f "$ROOT/.gpu_carry/scene800/transforms_test.json" ] && HEADLINE="$HEADLINE --scene $ROOT/.gpu_carry/scene800"
    MLP_PROBE="$PYTHON -m nfield.kernels.mlp_variants --sanitize"
    # memcheck names the kernel and address of any out-of-bounds access; without PyTorch's caching
    # allocator every tensor is its own allocation, so an access past a tensor is caught too
    SANITIZE="env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 $PYTHON -m"
    SANITIZE="$SANITIZE tests.kernels.kernel_checks mlp composite march grid mesh_distance nglod_trace --device cuda --size small"
    TRACING="$PYTHON scripts/bench_sphere_tracing.py --scale gpu"
    # the paper protocols at the papers' own sizes: SIREN's cameraman, Fourier features' split, CAM's
    # regression and FINER's figure (the whole table: reproduce_papers.py --scale gpu, ~10 min)
    PAPERS="$PYTHON scripts/reproduce_papers.py --scale gpu --rows siren ff-fourier cam-fit-base cam-fit finer-paper finer-siren"
  fi
  local pytest="$PYTHON -m pytest -m gpu -q -rfE --tb=short -p no:cacheprovider"
  local before="not test_gpu_nerf and not test_gpu_sdf and not distils and not compiled_on_cuda and not segment"
  STEPS=(
    "nerf|nerf|240|60|$HEADLINE --out $out/bench_nerf.json"  # 180 s of training, scene load, compiles, 3 x 5 views, a render
    "tests-nerf|tests|110|40|$pytest --timeout 100 --junitxml=$out/tests-nerf.xml tests/test_gpu_nerf.py"
    "tests-sdf|tests|110|40|$pytest --timeout 100 --junitxml=$out/tests-sdf.xml tests/test_gpu_sdf.py"
    "tests-distill|tests|150|40|$pytest --timeout 140 --junitxml=$out/tests-distill.xml tests/test_gpu_kilonerf.py -k distils"
    "tests-grid|tests|120|40|$pytest --timeout 100 --junitxml=$out/tests-grid.xml tests/kernels/test_kernels.py -k compiled_on_cuda"
    "tests-kilonerf-segment|tests|60|40|$pytest --timeout 50 --junitxml=$out/tests-kilonerf-segment.xml tests/test_gpu_kilonerf.py -k segment"
    "mlp|mlp|150|60|$MLP_PROBE --out $out/mlp_probe.json"  # 3 children x (start-up 10 + checks 5 + timing 2) + 3 memchecks x 25
    "kernels|kernels|60|60|$PYTHON scripts/bench_kernels.py --scale $SCALE --out $out/bench_kernels.json"
    "sdf|sdf|90|60|$TRACING --out $out/bench_sphere_tracing.json"  # a 600-step fit, 3 paths x 21 frames at 720p
    "tests-rest|tests|150|60|$pytest --timeout 100 --junitxml=$out/tests-rest.xml tests -k '$before'"
    "sanitizer|sanitizer|60|40|$SANITIZE"
    "kilonerf|kilonerf|60|60|$PYTHON scripts/bench_kilonerf.py --scale $SCALE --out $out/bench_kilonerf.json"
    "families|families|40|60|$PYTHON scripts/bench_families.py --scale $SCALE --out $out/bench_families.json"
    "viewer|viewer|50|60|$PYTHON scripts/bench_viewer.py --scale $SCALE --page simulated --out $out/bench_viewer.json"
    "scale|scale|30|60|$PYTHON scripts/bench_scale.py --scale $SCALE --models siren --out $out/bench_scale.json"
    "papers|papers|150|60|$PAPERS --out $out/reproduce_papers.json"  # 6 runs: start-up 6 x 10 s, FINER's 5000 steps at 512 px
    "image|image|40|60|$PYTHON scripts/bench_image.py --scale $SCALE --models relu-pe siren hash dense --out $out/bench_image.json"
  )
}
define_steps "$OUT_DIR"

selected() {  # selected NAME GROUP: whether --only names the step or its group (everything without --only)
  [ -z "$ONLY" ] && return 0
  local item
  for item in ${ONLY//,/ }; do [ "$item" = "$1" ] || [ "$item" = "$2" ] && return 0; done
  return 1
}
if [ -n "$ONLY" ]; then
  for item in ${ONLY//,/ }; do
    known=0
    for step in "${STEPS[@]}"; do
      IFS='|' read -r name group _ <<< "$step"
      { [ "$item" = "$name" ] || [ "$item" = "$group" ]; } && known=1
    done
    [ "$known" = 1 ] || { echo "gpu_check: --only: unknown step '$item'" >&2; exit 2; }
  done
fi

mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 2; }
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
define_steps "$OUT_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$DRY_RUN" = 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
  export NFIELD_CACHE_DIR="$OUT_DIR/cache"  # the dry run's probe verdicts stay in OUT_DIR
else
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: no CUDA device here; use --dry-run on a CPU machine" >&2; exit 1; }
  if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/nfield-site "$ROOT"/.whl/*.whl \
      || { echo "gpu_check: installing the wheels in .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/nfield-site"
  fi
fi
cd "$ROOT" || exit 2
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
"$PYTHON" -m nfield.cli info > "$OUT_DIR/info.txt" 2>&1

STARTED=$(date +%s)
: > "$OUT_DIR/steps.tsv"
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
# On the GPU the steps run one after another in the order above (each has the device to itself, and
# its timings mean something; a step starts only if its limit fits in what is left of the budget).
# The dry run's steps are small and single-threaded: two at a time, one thread each, longest first.
JOBS=1
if [ "$DRY_RUN" = 1 ]; then
  JOBS=2 && export OMP_NUM_THREADS=1
fi
LAUNCH=()
for step in "${STEPS[@]}"; do
  IFS='|' read -r name group _ <<< "$step"
  selected "$name" "$group" && LAUNCH+=("$step")
done
if [ "$DRY_RUN" = 1 ]; then  # longest first (their dry-run limits say roughly how long they take)
  mapfile -t LAUNCH < <(printf '%s\n' "${LAUNCH[@]}" | sort -t'|' -k4,4nr -s)
fi
NOT_RUN=()
for step in "${LAUNCH[@]}"; do
  IFS='|' read -r name group gpu_limit dry_limit command <<< "$step"
  limit=$gpu_limit
  [ "$DRY_RUN" = 1 ] && limit=$dry_limit
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done  # a free slot first, then the clock
  left=$(( BUDGET - ($(date +%s) - STARTED) ))
  if [ "$limit" -gt "$left" ]; then
    echo "== $name: not started (needs ${limit} s, ${left} s of the budget left)"
    printf '%s\t%s\t%s\t%s\n' "$name" "not run" 0 "$limit" > "$OUT_DIR/$name.result"
    NOT_RUN+=("$name")
    continue
  fi
  echo "== $name (limit ${limit} s): $command"
  if [ "$JOBS" = 1 ]; then
    run_step "$name" "$limit" "$command"
  else
    run_step "$name" "$limit" "$command" &
  fi
done
wait
for step in "${STEPS[@]}"; do
  IFS='|' read -r name _ <<< "$step"
  [ -f "$OUT_DIR/$name.result" ] && cat "$OUT_DIR/$name.result" >> "$OUT_DIR/steps.tsv" && rm -f "$OUT_DIR/$name.result"
done
echo "== steps run in $(( $(date +%s) - STARTED )) s"
if [ "${#NOT_RUN[@]}" -gt 0 ]; then
  rest=$(IFS=,; echo "${NOT_RUN[*]}")
  echo "not run within the budget: $rest; finish with: scripts/gpu_check.sh $OUT_DIR/more --only $rest" | tee "$OUT_DIR/not_run.txt"
fi
"$PYTHON" scripts/gpu_check_summary.py "$OUT_DIR" $([ "$DRY_RUN" = 1 ] && echo --dry-run)
status=$?
if [ -n "$ARCHIVE" ]; then
  tar czf "$ARCHIVE" -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")" && echo "wrote $ARCHIVE"
fi
exit $status
