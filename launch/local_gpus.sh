#!/usr/bin/env bash
# Pretrain on one machine with several GPUs: a single process drives every visible GPU;
# the batch is split over ('data', 'expert') and, for the large variant, experts over 'expert'.
#
#   launch/local_gpus.sh [VARIANT] [--config.field=value ...]
#   e.g. CUDA_VISIBLE_DEVICES=0,1,2,3 launch/local_gpus.sh large --config.mesh.expert=4
#
# Needs `python -m pip install -e . "jax[cuda12]"`. Rerun the same command to resume.
set -euo pipefail
VARIANT=${1:-base}; shift $(( $# < 1 ? $# : 1 ))
WORKDIR=${WORKDIR:-workdirs/$VARIANT}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec python -m westworld_jax.train --config "experiments/pretrain.py:$VARIANT" --workdir "$WORKDIR" "$@"
