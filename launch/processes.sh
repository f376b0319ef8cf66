#!/usr/bin/env bash
# N training processes on this machine, each as one host of a multi-host run: the path every
# multi-host launch takes (JAX's own variables JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
# JAX_PROCESS_ID; launch/slurm_gpu.sbatch sets the same from SLURM). Process 0 prints to the
# terminal, the others to $LOGDIR/process_<i>.log. One failing stops the others.
#
#   launch/processes.sh N [VARIANT] [--config.field=value ...]
#   e.g. XLA_FLAGS=--xla_force_host_platform_device_count=1 launch/processes.sh 2 tiny --workdir workdirs/two
#   (CPU: each process gets the devices XLA_FLAGS gives it; the global mesh spans all processes)
#
# Rerun the same command to resume.
set -euo pipefail
N=${1:?number of processes}; shift
VARIANT=${1:-tiny}; shift $(( $# < 1 ? $# : 1 ))
LOGDIR=${LOGDIR:-.}
PORT=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
mkdir -p "$LOGDIR"
pids=()
for ((i = 0; i < N; i++)); do
  out=/dev/stdout; [ "$i" -gt 0 ] && out="$LOGDIR/process_$i.log"
  JAX_COORDINATOR_ADDRESS=localhost:$PORT JAX_NUM_PROCESSES=$N JAX_PROCESS_ID=$i \
    python -m westworld_jax.train --config "experiments/pretrain.py:$VARIANT" "$@" > "$out" 2>&1 &
  pids+=($!)
done
status=0
for ((i = 0; i < N; i++)); do
  if ! wait -n; then status=1; kill "${pids[@]}" 2> /dev/null || true; fi
done
exit $status
