#!/usr/bin/env bash
# ViT-B/16 at 224 in bfloat16 on one GPU: train and inference, scan vs unrolled, fused attention on/off,
# timm side by side; prints a markdown table for benchmarks/RESULTS.md.
#
# Needs jax, flax, optax, ml_collections (and torch + timm for the peer rows); never TensorFlow. The
# device machine of this workplace lacks ml_collections: before the run, here, in the repo root,
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl ml-collections==1.1.0
# then run `bash benchmarks/gpu.sh` with carry [".whl"]: wheels found in .whl/ are installed first.
# It takes about 7-9 minutes on an H100 (most of it compiling); to split it over two calls, name the
# rows: ROWS="train_unrolled ..." (names below). Settings (environment variables):
#   TRAIN_BATCH (256), INFER_BATCH (1024), PEER_TRAIN_BATCH (128), PEER_INFER_BATCH (512), REPEATS (5),
#   ITERS (5), ROWS, MODEL (ViT-B_16), RES (224), EXTRA (more throughput.py flags), OUT (JSON folder).
# The timm rows run both frameworks in one process on one GPU, so they use half the batch and let JAX
# allocate on demand (it takes 75% of the GPU up front otherwise, and timm would run out of memory).
set -uo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import jax, flax, optax, ml_collections" || {
  echo "gpu.sh: jax, flax, optax and ml_collections must import (see the header for .whl/)." >&2
  exit 1
}

MODEL=${MODEL:-ViT-B_16}
RES=${RES:-224}
TRAIN_BATCH=${TRAIN_BATCH:-256}
INFER_BATCH=${INFER_BATCH:-1024}
REPEATS=${REPEATS:-5}
ITERS=${ITERS:-5}
EXTRA=${EXTRA:-}
COMMON="--model=$MODEL --res=$RES --dtype=bfloat16 --repeats=$REPEATS --iters=$ITERS --warmup=2"
DIR=${OUT:-/tmp/vit_jax_gpu_bench}
PEER_TRAIN_BATCH=${PEER_TRAIN_BATCH:-128}
PEER_INFER_BATCH=${PEER_INFER_BATCH:-512}
ROWS=${ROWS:-"train_unrolled train_unrolled_fused train_scan train_scan_fused train_timm
  infer_unrolled infer_unrolled_fused infer_scan infer_scan_fused infer_timm"}

row_flags() {
  case $1 in
    train_unrolled)       echo "--mode=train --batch=$TRAIN_BATCH" ;;
    train_unrolled_fused) echo "--mode=train --batch=$TRAIN_BATCH --fused_attention" ;;
    train_scan)           echo "--mode=train --batch=$TRAIN_BATCH --scan" ;;
    train_scan_fused)     echo "--mode=train --batch=$TRAIN_BATCH --scan --fused_attention" ;;
    train_scan_fused_remat) echo "--mode=train --batch=$((TRAIN_BATCH * 2)) --scan --fused_attention --remat" ;;
    infer_unrolled)       echo "--mode=infer --batch=$INFER_BATCH" ;;
    infer_unrolled_fused) echo "--mode=infer --batch=$INFER_BATCH --fused_attention" ;;
    infer_scan)           echo "--mode=infer --batch=$INFER_BATCH --scan" ;;
    infer_scan_fused)     echo "--mode=infer --batch=$INFER_BATCH --scan --fused_attention" ;;
    train_timm)           echo "--mode=train --batch=$PEER_TRAIN_BATCH --fused_attention --peer=timm" ;;
    infer_timm)           echo "--mode=infer --batch=$PEER_INFER_BATCH --fused_attention --peer=timm" ;;
    *) echo "gpu.sh: unknown row $1" >&2; return 1 ;;
  esac
}

row_env() {
  # The timm rows share the GPU with JAX, which would otherwise take 75% of its memory up front.
  case $1 in *_timm) echo XLA_PYTHON_CLIENT_PREALLOCATE=false ;; esac
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
source benchmarks/rows.sh
run_rows
