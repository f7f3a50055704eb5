"""RCDB-21k: 21,000 radial-contour categories x 1,000 instances (21M images), ViT pretraining.

  python -m vit_jax.main --config=configs/pretrain/rcdb_21k.py:ViT-B_16 --workdir=runs/rcdb21k-b16
Kataoka et al. (CVPR 2022) built RCDB to test whether contours are what matters in FDSL; their
abstract: contours "can match the performance of fractals", i.e. near the 82.7% ImageNet-1k top-1
of ExFractalDB-21k-pretrained ViT-B (81.8% from ImageNet-21k). The RCDB-21k figure itself is in the
paper's tables, not verified here. Our contours follow RCDB's idea (vit_jax/synthetic/contours.py),
not its exact generator. 300 epochs; not run here.
"""

import ml_collections

from configs.pretrain import fdsl


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return fdsl.pretrain_config(arg or "ViT-B_16", family="contours", num_categories=21_000,
                              instances_per_category=1_000)
