#!/usr/bin/env bash
# Pretrain on a Cloud TPU pod slice: copy this checkout to every worker, install, and start the
# same command on all workers at once (jax.distributed.initialize() finds the slice by itself).
#
#   launch/tpu_pod.sh TPU_NAME ZONE [VARIANT] [--config.field=value ...]
#   e.g. launch/tpu_pod.sh ww-v5p-64 us-east5-a large --config.mesh.expert=8
#
# WORKDIR must be reachable by every worker: a gs:// bucket (orbax writes there directly).
# The corpus is generated on each worker's local disk (deterministic by seed, so identical);
# pointing data.corpus_dir at a shared path generates each environment once (its lock).
set -euo pipefail
TPU=${1:?TPU name}; ZONE=${2:?zone}; VARIANT=${3:-large}; shift $(( $# < 3 ? $# : 3 ))
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
WORKDIR=${WORKDIR:?set WORKDIR=gs://bucket/path}
REMOTE_DIR=${REMOTE_DIR:-westworld_jax}
JAX_TPU_VERSION=${JAX_TPU_VERSION:-}  # e.g. 0.10.2; empty = the version setup.py pins

ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$1"; }

echo "copying $(pwd) to all workers of $TPU"
tar czf /tmp/westworld_jax_src.tgz --exclude=corpus --exclude=workdirs --exclude=.git .
gcloud compute tpus tpu-vm scp /tmp/westworld_jax_src.tgz "$TPU":/tmp/ --zone="$ZONE" $PROJECT_FLAG --worker=all
ssh_all "mkdir -p $REMOTE_DIR && tar xzf /tmp/westworld_jax_src.tgz -C $REMOTE_DIR"

echo "installing (TPU jax + the project) on all workers"
ssh_all "cd $REMOTE_DIR && python3 -m pip install -q -e . && python3 -m pip install -q 'jax[tpu]${JAX_TPU_VERSION:+==$JAX_TPU_VERSION}' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"

echo "starting training on all workers; logs in ~/$REMOTE_DIR/train.log on each worker"
ssh_all "cd $REMOTE_DIR && nohup python3 -m westworld_jax.train --config experiments/pretrain.py:$VARIANT --workdir $WORKDIR $* > train.log 2>&1 &"
echo "follow: gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=0 --command='tail -f $REMOTE_DIR/train.log'"
echo "rerun this script with the same WORKDIR to resume after a preemption"
