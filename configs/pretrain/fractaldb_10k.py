"""FractalDB-10k: 10,000 fractal categories x 1,000 instances (10M images), ViT pretraining at 224 px.

  python -m vit_jax.main --config=configs/pretrain/fractaldb_10k.py:ViT-Ti_16 --workdir=runs/fractaldb10k-ti
The larger FractalDB of Nakashima et al. (AAAI 2022), whose FractalDB-pretrained DeiT-Ti reaches
97.6% on CIFAR-10 after fine-tuning (98.0% from ImageNet-1k; the paper's abstract; we did not
verify which of FractalDB-1k/10k gives the 97.6%). 300 epochs as in the paper; not run here.
"""

import ml_collections

from configs.pretrain import fdsl


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return fdsl.pretrain_config(arg, family="fractal", num_categories=10_000,
                              instances_per_category=1_000)
