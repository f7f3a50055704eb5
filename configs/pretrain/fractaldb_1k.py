"""FractalDB-1k: 1,000 fractal categories x 1,000 instances (1M images), ViT pretraining at 224 px.

  python -m vit_jax.main --config=configs/pretrain/fractaldb_1k.py:ViT-Ti_16 --workdir=runs/fractaldb1k-ti
then fine-tune as any pretrained run (configs/transfer/*.py with --config.init_checkpoint=WORKDIR).
Reproduces Nakashima et al., "Can Vision Transformers Learn without Natural Images?" (AAAI 2022):
FractalDB-pretrained DeiT-Ti fine-tunes to 97.6% on CIFAR-10, against 98.0% from ImageNet-1k
pretraining (the paper's abstract). Not run here: 300 epochs of 1M images need accelerators.
"""

import ml_collections

from configs.pretrain import fdsl


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return fdsl.pretrain_config(arg, family="fractal", num_categories=1_000,
                              instances_per_category=1_000)
