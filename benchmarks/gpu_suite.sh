#!/usr/bin/env bash
# The GPU checks and figures in one run with a time budget, for a machine with one CUDA GPU:
#   1. benchmarks: segment_end_to_end.py and pretrain_throughput.py (--rank-every 10 and 1) on the GPU (while the
#      cohort is written);
#   2. `pgl compare` on the GPU with --jobs (random / BYOL / PGL / PGL without the deep level, 2 labelled
#      scans, 5 seeds) and, beside it,
#      random init with twice the fine-tuning steps (is the budget enough for random init to converge?);
#   3. meanwhile the CUDA paths on tiny data: AMP pretraining and --resume, torchrun with one process per GPU
#      (NCCL and SyncBatchNorm come into play from two GPUs), fine-tuning from the pretrained model with
#      validation and flips, segmentation with --tta --largest-component, evaluation.
# Whatever finished when the budget ends is packed into OUT_DIR/gpu_suite.tar.gz (finished runs of an
# interrupted comparison are reused by `pgl compare` with the same options, e.g. with fewer --seeds).
# Usage: benchmarks/gpu_suite.sh OUT_DIR [SECONDS]   (env: PRETRAIN_STEPS, FINETUNE_STEPS, JOBS,
# SEEDS, TEST (test phantoms, default 4), CONVERGE_SEEDS (default 2), INITS, LABELED (labelled counts,
# e.g. "1 2"), PRETRAIN_OPTIONS (e.g. "nonmonotone_p=0.3"),
# FINETUNE_OPTIONS (e.g. "structure_shift_hu=40", also given to the longer random-init run), PHASES
# (contrast phases of the unlabeled and test phantoms, e.g. "venous arterial native"), DEVICE,
# PYTHON, WORK; BENCH=0 skips the benchmarks, CONVERGE=0 the longer random-init run, SMOKE=0 the CUDA paths
# on tiny data)
set -u
OUT=${1:?usage: gpu_suite.sh OUT_DIR [SECONDS]}
BUDGET=${2:-570}
END=$(($(date +%s) + BUDGET))
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
P=${PRETRAIN_STEPS:-1800} F=${FINETUNE_STEPS:-2000} JOBS=${JOBS:-6} SEEDS=${SEEDS:-5} TEST=${TEST:-4}
read -r -a INIT_LIST <<<"${INITS:-random byol pgl pgl-nodeep}"
read -r -a LABELED_LIST <<<"${LABELED:-2}"
read -r -a PHASE_LIST <<<"${PHASES:-venous}"
PRETRAIN_ARGS=()
for o in ${PRETRAIN_OPTIONS:-}; do PRETRAIN_ARGS+=(--pretrain-option "$o"); done
FINETUNE_ARGS=()
for o in ${FINETUNE_OPTIONS:-}; do FINETUNE_ARGS+=(--finetune-option "$o"); done
MOST_LABELED=$(printf "%s\n" "${LABELED_LIST[@]}" | sort -n | tail -1)
W=${WORK:-$(mktemp -d /tmp/pgl_gpu.XXXX)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$W/logs"
left() { echo $((END - $(date +%s))); }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, and record the exit status
    local name=$1 limit=$2 t0=$(date +%s); shift 2
    [ "$limit" -gt $(($(left) - 30)) ] && limit=$(($(left) - 30))  # leave time to pack the results
    if [ "$limit" -le 0 ]; then echo "$name skipped (budget spent)" | tee -a "$W/logs/steps.txt"; return; fi
    timeout --kill-after=5 "$limit" "$@" >"$W/logs/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $(($(date +%s) - t0))s" | tee -a "$W/logs/steps.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  $PY -c "import torch, monai; print(torch.__version__, monai.__version__, torch.cuda.is_available())"; } \
    >"$W/logs/machine.txt" 2>&1

# the comparison's cohorts (CPU only) while the benchmarks use the GPU
COHORT="from pgl_engine.comparison.experiment import CompareConfig, make_data
make_data(CompareConfig(out='$W/cmp', labeled=($MOST_LABELED,), test=$TEST, unlabeled=24,
                        phases=tuple('${PHASE_LIST[*]}'.split())), None)"
step cohort 120 $PY -c "$COHORT" &
COHORT_PID=$!
if [ "${BENCH:-1}" = 1 ]; then
    step bench_segment 150 $PY benchmarks/segment_end_to_end.py --device "$DEVICE" --work-dir "$W/segbench"
    step bench_pretrain 90 $PY benchmarks/pretrain_throughput.py --device "$DEVICE" --work-dir "$W/ptbench"
    # the same with the rank measured on every step (as before --rank-every): what the SVD and its syncs cost
    step bench_pretrain_rank1 90 $PY benchmarks/pretrain_throughput.py --device "$DEVICE" --work-dir "$W/ptbench" \
        --rank-every 1 --json benchmarks/results/pretrain_throughput_rank_every_1.json
    cp benchmarks/results/*.json "$W/logs/" 2>/dev/null
fi
wait $COHORT_PID

# the comparison and the convergence check of random init (same cohorts and cache)
COMMON=(--labeled "${LABELED_LIST[@]}" --test "$TEST" --unlabeled 24 --phases "${PHASE_LIST[@]}" --device "$DEVICE"
        --progress json)
mkdir -p "$W/conv" "$W/cmp/cache" && ln -sfn "$W/cmp/data" "$W/conv/data" && ln -sfn "$W/cmp/cache" "$W/conv/cache"
step compare $(left) $PY -m pgl_engine compare --out "$W/cmp" "${COMMON[@]}" --seeds "$SEEDS" \
    --pretrain-steps "$P" --finetune-steps "$F" --jobs "$JOBS" --inits "${INIT_LIST[@]}" \
    ${PRETRAIN_ARGS[@]+"${PRETRAIN_ARGS[@]}"} ${FINETUNE_ARGS[@]+"${FINETUNE_ARGS[@]}"} &
COMPARE_PID=$!
[ "${CONVERGE:-1}" = 1 ] && step converge $(left) $PY -m pgl_engine compare --out "$W/conv" "${COMMON[@]}" --seeds "${CONVERGE_SEEDS:-2}" \
    --inits random --finetune-steps $((2 * F)) --jobs 2 ${FINETUNE_ARGS[@]+"${FINETUNE_ARGS[@]}"} &
CONVERGE_PID=$!

# CUDA paths on tiny data
if [ "${SMOKE:-1}" = 1 ]; then
S=$W/smoke
TINY=(--patch-size 32 32 32 --spacing 6 6 6 --device "$DEVICE" --progress json)
step smoke_phantoms 60 sh -c "$PY -m pgl_engine phantom --out $S/unl --count 4 --spacing-scale 4 --progress none &&
    $PY -m pgl_engine phantom --out $S/lab --count 3 --labels --seed 50 --spacing-scale 4 --progress none"
step smoke_pretrain 90 $PY -m pgl_engine pretrain --images "$S/unl/images" --out "$S/pre" --steps 20 "${TINY[@]}"
step smoke_resume 90 $PY -m pgl_engine pretrain --images "$S/unl/images" --out "$S/pre" --steps 30 --resume "${TINY[@]}"
GPUS=$($PY -c "import torch; print(max(1, torch.cuda.device_count()))" 2>/dev/null || echo 1)
step smoke_torchrun 120 $PY -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m pgl_engine pretrain \
    --images "$S/unl/images" --out "$S/ddp" --steps 10 "${TINY[@]}"
step smoke_finetune 120 $PY -m pgl_engine finetune --images "$S/lab/images" --labels "$S/lab/labels" --out "$S/ft" \
    --init "$S/pre" --steps 60 --val-count 1 --val-every 20 --flip-axes 0 1 2 --patch-size 32 32 32 \
    --device "$DEVICE" --progress json
step smoke_segment 90 $PY -m pgl_engine segment --model "$S/ft" --input "$S/lab/images" --output "$S/seg" --tta \
    --largest-component --device "$DEVICE" --progress json
step smoke_evaluate 60 $PY -m pgl_engine evaluate --pred "$S/seg" --labels "$S/lab/labels" --progress none
fi

wait $COMPARE_PID $CONVERGE_PID
pkill -f "pgl_engine compare" 2>/dev/null; pkill -f "multiprocessing.spawn" 2>/dev/null
nvidia-smi >"$W/logs/nvidia-smi-end.txt" 2>&1
cd "$W" && find cmp conv -path '*/data' -prune -o \( -name result.json -o -name evaluation.csv -o -name report.md \
    -o -name results.json -o -name '*.png' -o -path '*/models/*/pgl_model.json' \
    -o -path '*/models/*/model.safetensors' -o -path '*/models/*/train_log.jsonl' \
    -o -path '*/runs/*/model/train_log.jsonl' \) -print 2>/dev/null | tar czf "$OUT/gpu_suite.tar.gz" logs -T -
cp "$W/logs/steps.txt" "$OUT/steps.txt"

