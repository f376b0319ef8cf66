#!/usr/bin/env bash
# GPU benchmark suite in one call of a lent accelerator (the device machine comes bare and its
# Python lacks some of our packages: they travel as wheels in .whl/, see README "Benchmarks").
#
#   bash benchmarks/gpu_suite.sh ssm model train components control   # stages, in order
#   bash benchmarks/gpu_suite.sh ssm_ncu                     # kernel counters (ncu)
#
# Each stage has its own time limit so one slow stage cannot take the others' results with it.
# Results: JSON per benchmark under $RES (default benchmarks/results), plus a log; with $OUT
# set (the device tool's output folder), a tarball of both lands there.
set -u
RES=${RES:-benchmarks/results}
mkdir -p "$RES"
LOG=${OUT:-/tmp}/gpu_suite.log
export PYTHONUNBUFFERED=1
# JAX's GPU allocator takes 75% of the GPU by default (59.3 GiB of an H100's 79.1): the base step
# at batch 128 asks for 64.4 GiB (benchmarks/results/gpu_aot.json), more than that pool holds.
# Benchmark with the GPU's memory, as launch/local_gpus.sh trains.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import jax, flax, optax, orbax.checkpoint, grain, mujoco, ml_collections; \
print('jax', jax.__version__, 'flax', flax.__version__, 'mujoco', mujoco.__version__, jax.devices())"
} 2>&1 | tee -a "$LOG"

stage() {  # name, limit in seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "=== $name exit ${PIPESTATUS[0]} ($(date +%T))" | tee -a "$LOG"
}

for s in "$@"; do
  case $s in
    ssm) stage ssm "${SSM_LIMIT:-240}" python3 benchmarks/ssm.py --check --device-size base \
           --impls chunked,kernel ${SSM_ARGS:-} --out "$RES/ssm_gpu.json" ;;
    ssm_bf16) stage ssm_bf16 120 python3 benchmarks/ssm.py --check --device-size base \
           --impls kernel --dtype bfloat16 ${SSM_ARGS:-} --out "$RES/ssm_gpu_bf16.json" ;;
    model) stage model "${MODEL_LIMIT:-200}" python3 benchmarks/model.py \
           --variants "${MODEL_VARIANTS:-base_b14,base_b14_kernel,base_b14_bf16_kernel,base_b128_kernel}" \
           --out "$RES/model_gpu.json" ;;
    train) stage train "${TRAIN_LIMIT:-240}" python3 benchmarks/train.py \
           --variants "${TRAIN_VARIANTS:-base_b14_kernel,base_b14,base_b128_kernel}" \
           --out "$RES/train_gpu.json" ;;
    components) stage components "${COMPONENTS_LIMIT:-200}" python3 benchmarks/components.py \
           --size base ${COMPONENTS_ARGS:-} --out "$RES/components_gpu.json" ;;
    control) stage control "${CONTROL_LIMIT:-240}" python3 benchmarks/control.py \
           ${CONTROL_ARGS:-} --out "$RES/control_gpu.json" ;;
    ssm_ncu)  # registers, spills (local loads/stores), occupancy, SM and DRAM throughput of
              # each kernel launch (one fwd+bwd of the first kernel config); ncu needs
              # --clock-control none on these machines (leave the clocks alone).
      stage ssm_ncu "${NCU_LIMIT:-240}" ncu --clock-control none -k regex:selective_scan \
           --metrics launch__registers_per_thread,launch__occupancy_limit_registers,\
sm__warps_active.avg.pct_of_peak_sustained_active,\
smsp__sass_inst_executed_op_local_ld.sum,smsp__sass_inst_executed_op_local_st.sum,\
sm__throughput.avg.pct_of_peak_sustained_elapsed,\
dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum \
           python3 benchmarks/ssm.py --device-size base --impls kernel --repeats 1 \
           --kernel-configs "${NCU_CONFIG:-1x16x4x8}" --out /tmp/ssm_ncu.json ;;
    *) echo "unknown stage $s" | tee -a "$LOG" ;;
  esac
done

if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/results.tgz" "$RES"/*gpu*.json "$LOG" 2>/dev/null
  ls -la "$OUT"
fi
