"""FractalDB at ImageNet-21k's scale: 21,000 fractal categories x 1,000 instances (21M images).

  python -m vit_jax.main --config=configs/pretrain/exfractaldb_21k.py:ViT-B_16 --workdir=runs/exfdb21k-b16
Kataoka et al., "Replacing Labeled Real-image Datasets with Auto-generated Contours" (CVPR 2022,
abstract): ViT-B pretrained on ExFractalDB-21k fine-tunes to 82.7% top-1 on ImageNet-1k, against 81.8%
from ImageNet-21k under the same conditions. ExFractalDB renders 3-D fractals projected from several
viewpoints; ours are the 2-D FractalDB fractals at the same scale, so this is FractalDB-21k, the
closest this codebase renders. 300 epochs; not run here.
"""

import ml_collections

from configs.pretrain import fdsl


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return fdsl.pretrain_config(arg or "ViT-B_16", family="fractal", num_categories=21_000,
                              instances_per_category=1_000)
