#!/bin/bash
# A vit_jax run on a Cloud TPU VM pod slice, driven from your workstation with gcloud.
#
#   export TPU_NAME=vit-pod ZONE=us-central2-b ACCELERATOR=v4-32 PROJECT=my-project
#   launch/tpu_pod.sh create                # the slice (add SPOT=1 for a preemptible one)
#   launch/tpu_pod.sh setup                 # Python 3.11 + jax[tpu] + this checkout on every worker
#   launch/tpu_pod.sh run --config=configs/imagenet21k.py --workdir=gs://BUCKET/runs/vit-b16-i21k
#   launch/tpu_pod.sh logs                  # follow worker 0's log (WORKER=3 for another)
#   launch/tpu_pod.sh stop                  # SIGTERM on every worker: all save the same step and exit
#   launch/tpu_pod.sh delete                # give the slice back
#
# `run` copies the local checkout to every worker, so what runs is what you see. The same `run` command
# resumes a stopped or preempted run from its latest checkpoint in the workdir. Every worker runs the
# same command; vit_jax.main finds the other workers through the TPU metadata and joins them
# (jax.distributed), so nothing here names a coordinator. Data: TFDS_DATA_DIR (default
# gs://$BUCKET/tensorflow_datasets) is passed to every worker; prepare the data set there once.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
TFDS_DATA_DIR="${TFDS_DATA_DIR:-${BUCKET:+gs://$BUCKET/tensorflow_datasets}}"
REMOTE_DIR=vit_jax  # on every worker, under the home directory
LOG=vit_jax.log

on_workers() {  # on_workers WORKERS COMMAND: the command in bash on those workers (all, or 0, ...)
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker="$1" \
    --command="$2"
}

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
      --accelerator-type="$ACCELERATOR" --version="$RUNTIME" ${SPOT:+--spot}
    ;;
  setup)
    # The base image ships Python 3.10; jax >= 0.7 needs 3.11+, so uv installs 3.11 in a venv.
    on_workers all "set -e
      curl -LsSf https://astral.sh/uv/install.sh | sh
      ~/.local/bin/uv venv --python 3.11 --allow-existing ~/venv"
    "$0" sync
    on_workers all "set -e; cd ~/$REMOTE_DIR
      ~/.local/bin/uv pip install --python ~/venv/bin/python -e '.[tpu]'
      ~/venv/bin/python -c 'import jax; jax.distributed.initialize(); print(jax.process_index(), jax.devices())'"
    ;;
  sync)  # copies this checkout (without runs/ and .git, with its git revision in REVISION) to every worker
    root="$(dirname "$0")/.."
    dirty=$(git -C "$root" status --porcelain --untracked-files=no | grep -q . && echo +dirty || true)
    echo "$(git -C "$root" rev-parse HEAD)$dirty" > "$root/REVISION"
    archive=$(mktemp --suffix=.tar.gz)
    tar czf "$archive" --exclude=.git --exclude=runs --exclude='*.pyc' -C "$root" .
    gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME":vit_jax.tar.gz --zone="$ZONE" $PROJECT_FLAG \
      --worker=all
    on_workers all "mkdir -p ~/$REMOTE_DIR && tar xzf ~/vit_jax.tar.gz -C ~/$REMOTE_DIR"
    rm "$archive"
    ;;
  run)
    shift
    "$0" sync
    flags=$(printf ' %q' "$@")
    # nohup + setsid: the run outlives the ssh session; `stop` finds it by its pid file.
    on_workers all "cd ~/$REMOTE_DIR && TFDS_DATA_DIR=$TFDS_DATA_DIR setsid nohup \
      ~/venv/bin/python -m vit_jax.main$flags > ~/$LOG 2>&1 < /dev/null & echo \$! > ~/vit_jax.pid"
    echo "Started on all workers; follow with: $0 logs"
    ;;
  logs)
    on_workers "${WORKER:-0}" "tail -n 100 -f ~/$LOG"
    ;;
  stop)
    on_workers all "kill -TERM \$(cat ~/vit_jax.pid) 2>/dev/null || true"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --quiet
    ;;
  *)
    sed -n '2,16p' "$0"
    exit 1
    ;;
esac
