#!/usr/bin/env bash
# gpu_check.sh: everything this project checks on a machine with one GPU, in one run of at most ~10 minutes.
#
# Written for the lent machine of issue 12 (one H200, 16 cores, no network, a copy of the working tree
# only: ../shared/data is not there, so the data is generated here or given by LFME_DATA). Each step is
# time-boxed with timeout(1); a step that fails or runs out of time is recorded as such and the next
# one runs (set -uo pipefail, no -e). The whole run stays within GPU_CHECK_BUDGET_S (default 570 s:
# the device tool's 600 s command limit less a margin); a step starts only with time left for it.
#
#   1. tests  the GPU-marked tests (pytest -m gpu, every tests/**/test_*.py that uses the marker; today
#             tests/lfme/test_gpu.py): train_epoch on CUDA learns and never waits for the device inside the
#             loop, precision on the real device, LiveTeachers on CUDA = on the CPU, the batched
#             on-device augmentation. Without CUDA they are skipped with the reason.
#   2. run    `lfme run` (python -m pipeline.cli run) twice, on fresh run directories, with GPU resources:
#             ray.num_gpus=1, experts.resources.gpus_per_worker=0.33 (the three experts share the GPU),
#             cache/distill/evaluate 1 GPU (distill: one Ray Train worker, NCCL):
#               digits  the default run (ray_config.yaml: scikit-learn's bundled digits, no files);
#               cifar   configs/cifar10-lt.yaml (ResNet-32, bf16, decode_once + batched on-device
#                       augmentation) for 3 + 3 epochs on generated CIFAR-10-shaped PNGs
#                       (5,000 train / 1,000 test per class, each class its own colour + noise).
#             Recorded per stage: status, seconds (manifest.json), GPU utilisation/memory and the processes
#             holding GPU memory (nvidia-smi sampled every 0.5 s), and per expert the device and gpu_ids
#             it reported (experts/*/result.json); the student's seconds per epoch and precision.
#   3. speed  benchmarks.cache_speed --quick on the GPU (cached vs live teachers, cache read/write rates;
#             bf16, resnet8 and resnet32) on the generated CIFAR-shaped data. benchmarks.speed is not
#             run: its parts run on the CPU by design (no device option) and it needs the real CIFAR tree.
#   4. paper  configs/cifar10-lt.yaml as is (ResNet-32, 200 + 200 epochs) with GPU resources, on real
#             CIFAR-10 only: LFME_DATA=/path/to/shared/data (holding cifar10/train, cifar10/test) or the
#             cifar10 folder itself; skipped with the reason otherwise (random colours measure no
#             accuracy). Time-boxed to what the budget leaves: stopped by SIGINT (lfme records the stage
#             `interrupted` and keeps its checkpoints), it reports how far each expert / the student got,
#             their seconds per epoch and a projection of the whole run. Its run directory is kept
#             ($GPU_CHECK_WORK/run-paper): running the script again on the same machine resumes it.
#
# Results: one JSON per step, ${OUT:-docs/results}/gpu-{tests,run,speed,paper}.json (each with its
# parts' exit codes and wall times, and the versions: python, torch, CUDA, cuDNN, GPU name via torch
# and nvidia-smi, Ray), gpu-summary.json and, when OUT is set, the whole log gpu-check.log; a summary
# is printed at the end. A step's status: ok, failed, timeout (its time box cut it), skipped (with the
# reason) or, for step 4 only, partial (cut by its time box as planned). Exit status 0 when no step
# failed or timed out, 1 otherwise, 2 when refused.
#
# Run it, on a machine with CUDA (from anywhere; it works in the repository root):
#   OUT=/some/folder bash benchmarks/gpu_check.sh
# On the lent machine through the device tool (its $OUT comes back; at most 8 files, this writes 6):
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=600)
# That machine's python3 has torch but no Ray (2026-11): steps 1 and 3 run, steps 2 and 4 fail at once
# saying so. Ray can travel as wheels in a folder named by GPU_CHECK_WHEELS (default .whl, see
# /work/.library/device/README.md), installed here first with pip --no-index --no-deps; note the
# ray 2.60.0 cp312 wheel alone is 79 MB, over the 64 MiB a call carries.
#
# Without CUDA it refuses (exit 2) unless GPU_CHECK_ALLOW_CPU=1, which runs the same steps on the CPU at
# the tiniest sizes (the GPU tests then show as skipped with their reason; distill stays on gloo, the
# logical GPU of ray.num_gpus=1 goes to the experts, cache and evaluate tasks, which train on the CPU
# and say so), niced, to check this script end to end. Without OUT it then writes to
# $GPU_CHECK_WORK/results, not docs/results.
#
# Environment: OUT, LFME_DATA, PYTHON (default .venv/bin/python if it imports torch, else python3),
# GPU_CHECK_BUDGET_S (570 on a GPU, 600 on the CPU), GPU_CHECK_WORK (default /tmp/lfme-gpu-check: the
# generated data, run directories, logs), GPU_CHECK_STEPS (default "tests run speed paper": a subset runs
# only those, e.g. GPU_CHECK_STEPS=paper to go on with step 4 on a machine still warm),
# GPU_CHECK_WHEELS, GPU_CHECK_ALLOW_CPU.

set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
START=$(date +%s)
ALLOW_CPU=${GPU_CHECK_ALLOW_CPU:-0}
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/lfme-gpu-check}
LFME_DATA=${LFME_DATA:-}
RESERVE=15   # seconds kept for the records and the summary after the last step
STEPS=" ${GPU_CHECK_STEPS:-tests run speed paper} "
wants() { [[ "$STEPS" == *" $1 "* ]]; }
mkdir -p "$WORK" || exit 2

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=${GPU_CHECK_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "gpu_check: installing the carried wheels of $WHEELS into $WORK/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
        && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The project need not be installed: its packages import from the tree (Ray's workers inherit this).
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null)
if [ "$CUDA" = 1 ]; then
    MODE=cuda
elif [ "$ALLOW_CPU" = 1 ]; then
    MODE=cpu
else
    echo "gpu_check: refused: $PYTHON sees no CUDA device (torch.cuda.is_available() is False or torch is missing)." >&2
    echo "gpu_check: this script is for a machine with a GPU. To check the script itself on the CPU, at the tiniest" >&2
    echo "gpu_check: sizes: GPU_CHECK_ALLOW_CPU=1 bash benchmarks/gpu_check.sh" >&2
    exit 2
fi

if [ -n "${OUT:-}" ]; then OUT_DIR=$OUT; elif [ "$MODE" = cuda ]; then OUT_DIR=docs/results; else OUT_DIR=$WORK/results; fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG=$WORK/gpu-check.log
[ -n "${OUT:-}" ] && LOG=$OUT_DIR/gpu-check.log
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

if [ "$MODE" = cuda ]; then
    BUDGET=${GPU_CHECK_BUDGET_S:-570}
    NICE=0
    # step caps in seconds (each also bounded by what the budget leaves)
    CAP_TESTS=120 CAP_DIGITS=120 CAP_CIFAR=150 CAP_SPEED=75 CAP_PAPER=100000
    TRAIN_PER_CLASS=5000 TEST_PER_CLASS=1000
    # distill: one worker holding the GPU (two NCCL ranks cannot share one device)
    GPU_SETS=(ray.num_gpus=1 experts.resources.gpus_per_worker=0.33 cache.resources.gpus_per_worker=1
              distill.resources.num_workers=1 distill.resources.gpus_per_worker=1 evaluate.resources.gpus_per_worker=1)
    DIGITS_SETS=()
    CIFAR_SETS=(experts.epochs=3 distill.epochs=3)
    SPEED_RUNS=("resnet8" "resnet32")
    SPEED_ARGS=(--quick --device cuda --precision bf16 --workers 4 --profile 3)
    PAPER_SETS=()
else
    BUDGET=${GPU_CHECK_BUDGET_S:-600}
    NICE=19
    CAP_TESTS=120 CAP_DIGITS=200 CAP_CIFAR=200 CAP_SPEED=120 CAP_PAPER=90
    TRAIN_PER_CLASS=40 TEST_PER_CLASS=10
    # A logical GPU (as tests/integration/test_gpu_shares.py): experts, cache and evaluate hold shares of it and run on the
    # CPU, saying so; the distill stage's Ray Train worker cannot take a GPU without CUDA (NCCL), so it has none.
    GPU_SETS=(ray.num_gpus=1 experts.resources.gpus_per_worker=0.33 cache.resources.gpus_per_worker=1
              distill.resources.num_workers=1 distill.resources.gpus_per_worker=0 evaluate.resources.gpus_per_worker=1)
    DIGITS_SETS=(experts.epochs=2 distill.epochs=2)
    CIFAR_SETS=(experts.epochs=1 distill.epochs=1 model.arch=resnet8 data.imbalance_factor=10 data.val_per_class=4
                data.loader_workers=0 split.method=balanced experts.batch_size=32 distill.batch_size=32)
    SPEED_RUNS=("resnet8")
    SPEED_ARGS=(--quick --device cpu --precision fp32 --batches 3 --repeats 1 --warmup 1 --cache-rows 2000 --cache-repeats 1
                --batch-size 32 --imbalance-factor 10)
    # The preset's 200 + 200 epochs on a small model and (with LFME_DATA at the generated data) a tiny set: only the
    # time box, the SIGINT stop, the resume on the next invocation and the progress records are checked here.
    PAPER_SETS=(model.arch=resnet8 data.loader_workers=0 data.imbalance_factor=10 data.val_per_class=4 split.method=balanced
                experts.batch_size=32 distill.batch_size=32)
fi

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
# box CAP: seconds for the next command, CAP or what the budget leaves after the reserve, whichever is less
box() { local l=$(( $(left) - RESERVE )); if (( l < $1 )); then echo "$l"; else echo "$1"; fi; }
sets() { local s; for s in "$@"; do printf -- '--set\n%s\n' "$s"; done; }
gc() { "$PYTHON" -m benchmarks.gpu_check "$@"; }

# run_timed LIMIT LOGFILE COMMAND...: runs it under timeout (SIGINT at LIMIT, SIGKILL 30 s later), its output
# on the console and in LOGFILE; sets RC and WALL. A limit under 10 s runs nothing (RC=124).
run_timed() {
    local limit=$1 log=$2; shift 2
    local t0; t0=$(date +%s.%N)
    echo "+ [$(elapsed)s, box ${limit}s] $*"
    if (( limit < 10 )); then
        echo "gpu_check: no time left in the budget for this command" | tee "$log"; RC=124; WALL=0; return
    fi
    nice -n "$NICE" timeout -k 30 -s INT "$limit" "$@" 2>&1 | tee "$log"
    RC=${PIPESTATUS[0]}
    WALL=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "= exit $RC after ${WALL}s"
}

WATCH_PID=""
watch_start() {  # nvidia-smi every 0.5 s into $1 (cuda mode, where nvidia-smi exists)
    WATCH_PID=""
    if [ "$MODE" = cuda ] && command -v nvidia-smi >/dev/null; then
        : > "$1"; gc watch "$1" --interval 0.5 & WATCH_PID=$!
    fi
}
watch_stop() { if [ -n "$WATCH_PID" ]; then kill "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=""; fi; }
trap 'watch_stop' EXIT

echo "gpu_check: mode $MODE, python $PYTHON, budget ${BUDGET}s, work $WORK, results $OUT_DIR"
gc versions > "$WORK/versions.json" || echo '{}' > "$WORK/versions.json"
cat "$WORK/versions.json"
VERSIONS=(--versions "$WORK/versions.json")
rm -f "$WORK"/part-*.json

# lfme_run NAME CONFIG CAP SETS...: a fresh run directory $WORK/run-NAME, sampled GPU, one part record
lfme_run() {
    local name=$1 config=$2 cap=$3; shift 3
    local run_dir=$WORK/run-$name
    rm -rf "$run_dir"
    watch_start "$WORK/gpu-$name.jsonl"
    local args; mapfile -t args < <(sets "${GPU_SETS[@]}" "$@")
    run_timed "$(box "$cap")" "$WORK/run-$name.log" "$PYTHON" -m pipeline.cli run "$config" --run-dir "$run_dir" "${args[@]}"
    watch_stop
    gc run-record "$name" "$run_dir" "$WORK/run-$name.log" --gpu-samples "$WORK/gpu-$name.jsonl" --mode "$MODE" --expect-done \
        --rc "$RC" --wall "$WALL" --command "lfme run $config ${args[*]}" --out "$WORK/part-run-$name.json"
}

# ---------------------------------------------------------------------------------------------- 1. tests
if wants tests; then
    echo; echo "=== 1. tests: the GPU-marked tests ==="
    mapfile -t GPU_TEST_FILES < <(grep -rl --include="test_*.py" "pytest.mark.gpu" tests | sort)
    rm -f "$WORK/tests.xml"
    run_timed "$(box "$CAP_TESTS")" "$WORK/tests.log" "$PYTHON" -m pytest -m gpu -p no:cacheprovider -rs --junitxml "$WORK/tests.xml" \
        "${GPU_TEST_FILES[@]}"
    NO_SKIPS=(); [ "$MODE" = cuda ] && NO_SKIPS=(--no-skips)   # with CUDA, a skipped GPU test is a problem
    gc junit-record pytest "$WORK/tests.xml" "${NO_SKIPS[@]}" --rc "$RC" --wall "$WALL" --command "pytest -m gpu ${GPU_TEST_FILES[*]}" \
        --out "$WORK/part-tests.json"
    gc step "$OUT_DIR/gpu-tests.json" tests --mode "$MODE" --part "$WORK/part-tests.json" "${VERSIONS[@]}"
fi

# The generated CIFAR-10-shaped tree of steps 2 and 3, made once per size and kept in $WORK; its part goes
# into the first step that uses it.
CIFAR_DATA=$WORK/data/cifar10
DATA_RC=0
DATA_PART=()
if wants run || wants speed; then
    if [ "$(cat "$CIFAR_DATA/.made" 2>/dev/null)" = "$TRAIN_PER_CLASS/$TEST_PER_CLASS" ]; then
        echo; echo "gpu_check: generated data kept from an earlier run: $CIFAR_DATA"
    else
        echo; echo "=== data: a generated CIFAR-10-shaped ImageFolder tree ==="
        run_timed "$(box 90)" "$WORK/make-cifar.log" "$PYTHON" -m benchmarks.gpu_check make-cifar "$CIFAR_DATA" \
            --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS"
        DATA_RC=$RC
        [ "$RC" = 0 ] && echo "$TRAIN_PER_CLASS/$TEST_PER_CLASS" > "$CIFAR_DATA/.made"
        gc command-record make-cifar --rc "$RC" --wall "$WALL" --out "$WORK/part-make-cifar.json" \
            --command "make-cifar $CIFAR_DATA, $TRAIN_PER_CLASS train / $TEST_PER_CLASS test images per class"
        DATA_PART=(--part "$WORK/part-make-cifar.json")
    fi
fi

# Steps 2 and 4 run the pipeline, which needs Ray: without it they fail at once, saying so.
RAY_MISSING=""
if ! RAY_ERR=$("$PYTHON" -c "import ray, ray.train" 2>&1); then
    RAY_MISSING="Ray is not importable by $PYTHON ($(echo "$RAY_ERR" | tail -1)); lfme run needs ray[default,train,tune] 2.60: install it, or carry its wheels (GPU_CHECK_WHEELS)"
fi

# ---------------------------------------------------------------------------------------------- 2. run
if wants run && [ -n "$RAY_MISSING" ]; then
    echo; echo "=== 2. run: lfme run with GPU resources ==="
    gc step "$OUT_DIR/gpu-run.json" run --mode "$MODE" --failed "$RAY_MISSING" "${DATA_PART[@]}" "${VERSIONS[@]}"
    DATA_PART=()
elif wants run; then
    echo; echo "=== 2. run: lfme run with GPU resources ==="
    RUN_PARTS=("${DATA_PART[@]}")
    DATA_PART=()
    lfme_run digits ray_config.yaml "$CAP_DIGITS" "${DIGITS_SETS[@]}"
    RUN_PARTS+=(--part "$WORK/part-run-digits.json")
    if [ "$DATA_RC" = 0 ]; then
        lfme_run cifar configs/cifar10-lt.yaml "$CAP_CIFAR" "data.root=$CIFAR_DATA" "${CIFAR_SETS[@]}"
        RUN_PARTS+=(--part "$WORK/part-run-cifar.json")
    fi
    gc step "$OUT_DIR/gpu-run.json" run --mode "$MODE" "${RUN_PARTS[@]}" "${VERSIONS[@]}"
fi

# ---------------------------------------------------------------------------------------------- 3. speed
if ! wants speed; then
    :
elif [ "$DATA_RC" != 0 ]; then
    echo; echo "=== 3. speed: benchmarks.cache_speed --quick ==="
    gc step "$OUT_DIR/gpu-speed.json" speed --mode "$MODE" --skipped "no generated CIFAR-shaped data (make-cifar failed)" \
        "${DATA_PART[@]}" "${VERSIONS[@]}"
else
    echo; echo "=== 3. speed: benchmarks.cache_speed --quick ==="
    SPEED_PARTS=("${DATA_PART[@]}")
    for arch in "${SPEED_RUNS[@]}"; do
        rm -f "$WORK/cache_speed-$arch.json"
        run_timed "$(box "$CAP_SPEED")" "$WORK/speed-$arch.log" "$PYTHON" -m benchmarks.cache_speed "${SPEED_ARGS[@]}" --arch "$arch" \
            --data "$CIFAR_DATA" --tmp "$WORK" --out "$WORK/cache_speed-$arch.json"
        gc command-record "cache_speed-$arch" --json "$WORK/cache_speed-$arch.json" --rc "$RC" --wall "$WALL" \
            --command "benchmarks.cache_speed ${SPEED_ARGS[*]} --arch $arch" --out "$WORK/part-speed-$arch.json"
        SPEED_PARTS+=(--part "$WORK/part-speed-$arch.json")
    done
    gc step "$OUT_DIR/gpu-speed.json" speed --mode "$MODE" "${SPEED_PARTS[@]}" "${VERSIONS[@]}"
fi

# ---------------------------------------------------------------------------------------------- 4. paper
PAPER_ROOT=""
if [ -n "$LFME_DATA" ]; then
    if [ -d "$LFME_DATA/cifar10/train" ]; then PAPER_ROOT=$LFME_DATA/cifar10; elif [ -d "$LFME_DATA/train" ]; then PAPER_ROOT=$LFME_DATA; fi
fi
PAPER_LEFT=$(( $(left) - RESERVE - 30 ))   # 30 s: the SIGKILL grace after the SIGINT
(( PAPER_LEFT > CAP_PAPER )) && PAPER_LEFT=$CAP_PAPER
wants paper && { echo; echo "=== 4. paper: CIFAR-10-LT, the preset (ResNet-32, 200 + 200 epochs), time-boxed ==="; }
if ! wants paper; then
    :
elif [ -z "$LFME_DATA" ]; then
    gc step "$OUT_DIR/gpu-paper.json" paper --mode "$MODE" "${VERSIONS[@]}" \
        --skipped "no real CIFAR-10 given: set LFME_DATA=/path/to/shared/data (with cifar10/train and cifar10/test) or to the cifar10 folder"
elif [ -z "$PAPER_ROOT" ]; then
    gc step "$OUT_DIR/gpu-paper.json" paper --mode "$MODE" "${VERSIONS[@]}" \
        --skipped "LFME_DATA=$LFME_DATA holds neither cifar10/train nor train/"
elif [ -n "$RAY_MISSING" ]; then
    gc step "$OUT_DIR/gpu-paper.json" paper --mode "$MODE" --failed "$RAY_MISSING" "${VERSIONS[@]}"
elif (( PAPER_LEFT < 60 )); then
    gc step "$OUT_DIR/gpu-paper.json" paper --mode "$MODE" "${VERSIONS[@]}" \
        --skipped "budget: $(left) s left of ${BUDGET} s, too little for a useful part of the run"
else
    # Kept between invocations (resumed by the next one) unless it was made from other data.
    PAPER_DIR=$WORK/run-paper
    if [ -f "$PAPER_DIR/.data" ] && [ "$(cat "$PAPER_DIR/.data")" != "$PAPER_ROOT" ]; then rm -rf "$PAPER_DIR"; fi
    mkdir -p "$PAPER_DIR" && echo "$PAPER_ROOT" > "$PAPER_DIR/.data"
    watch_start "$WORK/gpu-paper.jsonl"
    mapfile -t args < <(sets "${GPU_SETS[@]}" "data.root=$PAPER_ROOT" "${PAPER_SETS[@]}")
    run_timed "$PAPER_LEFT" "$WORK/run-paper.log" "$PYTHON" -m pipeline.cli run configs/cifar10-lt.yaml --run-dir "$PAPER_DIR" "${args[@]}"
    watch_stop
    gc run-record paper "$PAPER_DIR" "$WORK/run-paper.log" --gpu-samples "$WORK/gpu-paper.jsonl" --mode "$MODE" --boxed \
        --rc "$RC" --wall "$WALL" --command "lfme run configs/cifar10-lt.yaml ${args[*]}" --out "$WORK/part-paper.json"
    gc step "$OUT_DIR/gpu-paper.json" paper --mode "$MODE" --part "$WORK/part-paper.json" "${VERSIONS[@]}"
fi

# ---------------------------------------------------------------------------------------------- summary
echo; echo "=== summary ($MODE, $(elapsed) s of ${BUDGET} s; results in $OUT_DIR) ==="
gc summary "$OUT_DIR" --json "$OUT_DIR/gpu-summary.json" "${VERSIONS[@]}"
"$PYTHON" - "$OUT_DIR" $STEPS <<'EOF'
import json, sys
from pathlib import Path
steps = {name: json.loads((Path(sys.argv[1]) / f"gpu-{name}.json").read_text())["status"] for name in sys.argv[2:]}
bad = [name for name, status in steps.items() if status in ("failed", "timeout")]
print("gpu_check: " + ", ".join(f"{name} {status}" for name, status in steps.items())
      + (f"; not ok: {', '.join(bad)}" if bad else "; every step ok, partial (time box, as planned) or skipped"))
sys.exit(1 if bad else 0)
EOF
