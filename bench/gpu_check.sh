#!/usr/bin/env bash
# One command for a lent GPU machine (no network needed):
#   bash bench/gpu_check.sh                        # everything, about 20 minutes
#   GPU_CHECK_BUDGET=540 bash bench/gpu_check.sh   # what fits in 9 minutes, most important first
# On the lent machine one command may run 10 minutes and a task has 15 minutes of device time in
# all, so the steps run in order of importance and each is cut to the budget left (a step that
# would get under 30 s is skipped and said so). RESULTS chooses the results file (default
# bench/RESULTS.md); when $OUT is set (the device tool's folder that comes back), the results
# file and a tarball of the logs are copied there.
# 1. installs this checkout without dependencies (pip install --no-deps -e .),
# 2. runs the CUDA tests (pytest -m cuda),
# 3. the kernel benchmark in bf16 (NCHW), each Triton kernel's profiler time per layer (to check
#    bench/bench_compile.py --model), then the model benchmark (training step and inference,
#    DCSD vs static),
# 4. the rest of the suite on the GPU,
# 5. the kernel benchmark in fp32 and in bf16 channels_last, then rank_metrics against a stable
#    torch.sort on the GPU at MSMT17 size (bench/bench_evaluate.py),
# 6. the domain-conflict benchmark in quick mode, if bench/bench_domain_conflict.py exists,
# appends every table to bench/RESULTS.md under a heading with device, versions and date, and
# prints a summary. Each step has its own time limit and a failed step does not stop the next;
# the exit status is 1 if any step failed. Logs go to $LOG_DIR (default: a fresh temporary folder);
# PYTHON chooses the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
RESULTS=${RESULTS:-bench/RESULTS.md}
BUDGET=${GPU_CHECK_BUDGET:-1500}
LOG_DIR=${LOG_DIR:-$(mktemp -d)}
mkdir -p "$LOG_DIR"
declare -a SUMMARY=()
FAILED=0

# step NAME LIMIT_SECONDS COMMAND...: run with a time limit (cut to the budget left), log, record
# status and duration.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS - 15))
    if [ "$left" -lt 30 ]; then
        SUMMARY+=("$name: skipped (time budget of ${BUDGET}s spent)")
        echo "=== $name: skipped, budget spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local log="$LOG_DIR/$name.log" start=$SECONDS status
    echo "=== $name (limit ${limit}s): $*"
    timeout --kill-after=30 "$limit" "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    local line="$name: $([ "$status" -eq 0 ] && echo ok || echo "FAILED (exit $status$([ "$status" -eq 124 ] && echo ', time limit'))"), $((SECONDS - start)) s"
    SUMMARY+=("$line")
    [ "$status" -eq 0 ] || FAILED=1
    echo "=== $line"
}

if ! $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch: this script is for a GPU machine" >&2
    exit 2
fi
# Offline: no dependencies; without build isolation if the isolated build cannot get setuptools.
step install 180 bash -c "$PYTHON -m pip install --no-deps -e . ||
    $PYTHON -m pip install --no-deps --no-build-isolation -e ."

DEVICE=$($PYTHON -c "import torch; print(torch.cuda.get_device_name())")
VERSIONS=$($PYTHON -c "import sys, torch, triton; print(f'python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}')")
DATE=$(date -u +%Y-%m-%dT%H:%MZ)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo
    echo "# GPU check: $DEVICE, $DATE"
    echo
    echo "- \`bash bench/gpu_check.sh\` at commit $COMMIT; $VERSIONS"
    echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
} >>"$RESULTS"

step cuda-tests 180 $PYTHON -m pytest -q -m cuda -p no:cacheprovider
step bench-kernels 180 $PYTHON bench/bench_kernels.py --dtypes bfloat16 --out "$RESULTS"
# Every Triton kernel's own GPU time per layer (profiler), against bench_compile.py --model.
step kernel-times 120 $PYTHON bench/bench_kernels.py --kernel-times --dtypes bfloat16 --out "$RESULTS"
step bench-model 240 $PYTHON bench/bench_model.py --out "$RESULTS"
step suite 420 $PYTHON -m pytest -q -m "not cuda" -p no:cacheprovider
step bench-kernels-fp32 180 $PYTHON bench/bench_kernels.py --dtypes float32 --out "$RESULTS"
step bench-kernels-nhwc 120 $PYTHON bench/bench_kernels.py --dtypes bfloat16 --channels-last \
    --impls triton cudnn --out "$RESULTS"
# Is a plain stable torch.sort as fast as rank_metrics' bucketing on the GPU (issue 13)?
step bench-evaluate 240 $PYTHON bench/bench_evaluate.py --device cuda --methods dcsd,torch_sort
{
    echo
    echo "## rank_metrics on the GPU at MSMT17 size (bench/bench_evaluate.py --device cuda)"
    echo
    tail -n 5 "$LOG_DIR/bench-evaluate.log" 2>/dev/null
} >>"$RESULTS"
if [ -f bench/bench_domain_conflict.py ]; then
    step bench-domain-conflict 240 $PYTHON bench/bench_domain_conflict.py --quick
    {
        echo
        echo "## Domain conflict (bench/bench_domain_conflict.py --quick)"
        echo
        echo '```'
        tail -n 40 "$LOG_DIR/bench-domain-conflict.log"
        echo '```'
    } >>"$RESULTS"
else
    SUMMARY+=("bench-domain-conflict: skipped (bench/bench_domain_conflict.py not present)")
fi

{
    echo
    echo "## GPU check summary ($DATE)"
    echo
    for line in "${SUMMARY[@]}"; do echo "- $line"; done
    for name in cuda-tests suite; do
        [ -f "$LOG_DIR/$name.log" ] && echo "- $name: $(grep -E '(passed|failed|error)' "$LOG_DIR/$name.log" | tail -1)"
    done
} | tee -a "$RESULTS"
echo "logs: $LOG_DIR; tables appended to $RESULTS"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    cp "$RESULTS" "$OUT/RESULTS.md"
    tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$LOG_DIR" .
    echo "copied $RESULTS and the logs to $OUT"
fi
exit $FAILED
