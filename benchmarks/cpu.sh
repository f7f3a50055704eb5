#!/usr/bin/env bash
# The CPU targets of benchmarks/RESULTS.md: ViT-S/16 at 224, batch 8, float32, train and inference
# next to timm; ViT-B/16 forward against the matmul peak; ViT-H/14 train-step compile time with scan
# and unrolled; the effect of the optimisations on CPU; and the studies' small models (digits,
# Fashion-MNIST vit_tiny / vit_small) in train mode next to timm, the ResNet baseline's train step, and
# the digits model's gradient against its forward (grad_digits* vs infer_digits* rows). Prints a
# markdown table.
#   bash benchmarks/cpu.sh                      (all rows; about 15 minutes on 2 cores)
#   ROWS="infer_s16_timm train_s16_timm" bash benchmarks/cpu.sh
# The timm rows need the [bench] extra (`pip install -e ".[bench]"`). Settings (environment):
#   ROWS, REPEATS (9), EXTRA (more throughput.py flags), OUT (JSON folder, /tmp/vit_jax_cpu_bench).
# Run it on a quiet machine: other processes slow torch's OpenMP threads far more than XLA's.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1

REPEATS=${REPEATS:-9}
EXTRA=${EXTRA:-}
COMMON="--res=224 --batch=8 --repeats=$REPEATS --warmup=2"
# The studies' small models (train step, batch 128, 10 classes, AdamW); --host_devices=0: one per core.
SMALL="--mode=train --batch=128 --num_classes=10 --iters=5"
DIR=${OUT:-/tmp/vit_jax_cpu_bench}
ROWS=${ROWS:-"infer_s16_timm train_s16_timm infer_b16 compile_h14_scan compile_h14_unrolled
  infer_s16_fused train_s16_fused train_s16_no_donate train_s16_scan infer_s16_bf16 train_s16_bf16
  train_digits_timm train_digits_1dev_timm train_fmnist_tiny_timm train_fmnist_small_timm train_fmnist_resnet
  train_s16_2dev_timm infer_digits_1dev grad_digits_1dev infer_digits grad_digits"}

row_flags() {
  case $1 in
    infer_s16_timm)       echo "--model=ViT-S_16 --mode=infer --peer=timm" ;;
    train_s16_timm)       echo "--model=ViT-S_16 --mode=train --peer=timm" ;;
    infer_b16)            echo "--model=ViT-B_16 --mode=infer" ;;
    compile_h14_scan)     echo "--model=ViT-H_14 --mode=train --compile_only --scan" ;;
    compile_h14_unrolled) echo "--model=ViT-H_14 --mode=train --compile_only" ;;
    infer_s16_fused)      echo "--model=ViT-S_16 --mode=infer --fused_attention" ;;
    train_s16_fused)      echo "--model=ViT-S_16 --mode=train --fused_attention" ;;
    train_s16_no_donate)  echo "--model=ViT-S_16 --mode=train --no-donate" ;;
    train_s16_scan)       echo "--model=ViT-S_16 --mode=train --scan" ;;
    infer_s16_bf16)       echo "--model=ViT-S_16 --mode=infer --dtype=bfloat16" ;;
    train_s16_bf16)       echo "--model=ViT-S_16 --mode=train --dtype=bfloat16" ;;
    train_digits_timm)       echo "$SMALL --model=digits --res=16 --host_devices=0 --peer=timm" ;;
    train_digits_1dev_timm)  echo "$SMALL --model=digits --res=16 --host_devices=1 --peer=timm" ;;
    infer_digits_1dev)    echo "$SMALL --mode=infer --model=digits --res=16 --host_devices=1" ;;
    grad_digits_1dev)     echo "$SMALL --mode=grad --model=digits --res=16 --host_devices=1" ;;
    infer_digits)         echo "$SMALL --mode=infer --model=digits --res=16 --host_devices=0" ;;
    grad_digits)          echo "$SMALL --mode=grad --model=digits --res=16 --host_devices=0" ;;
    train_s16_2dev_timm)  echo "--model=ViT-S_16 --mode=train --host_devices=2 --peer=timm" ;;
    train_fmnist_tiny_timm)  echo "$SMALL --model=fmnist_vit_tiny --res=32 --host_devices=0 --peer=timm" ;;
    train_fmnist_small_timm) echo "$SMALL --model=fmnist_vit_small --res=32 --host_devices=0 --peer=timm" ;;
    train_fmnist_resnet)  echo "$SMALL --model=fmnist_resnet --res=32 --host_devices=0" ;;
    *) echo "cpu.sh: unknown row $1" >&2; return 1 ;;
  esac
}

row_env() { :; }

uname -m; nproc; python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
source benchmarks/rows.sh
run_rows
