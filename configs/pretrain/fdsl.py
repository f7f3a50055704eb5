"""The papers' FDSL pretraining recipe for ViTs (shared by fractaldb_*.py, exfractaldb_21k.py,
rcdb_21k.py): DeiT's training of ViT-Ti/S/B at 224 px on formula-driven categories.

Kataoka et al. (CVPR 2022, "Replacing Labeled Real-image Datasets with Auto-generated Contours") and
Nakashima et al. (AAAI 2022) pretrain ViTs with DeiT's training code and its defaults, so the recipe is
configs/deit/imagenet1k.py's (AdamW, weight decay 0.05, label smoothing 0.1, stochastic depth 0.1,
RandAugment(2, 9), mixup 0.8 / CutMix 1.0, EMA, cosine schedule with 5 warmup epochs, learning rate
5e-4 x batch / 512; its docstring lists where it differs from DeiT's code) with ImageNet replaced by
the rendered categories and the epochs counted in their images; not re-checked against the papers'
tables. Images are rendered on the fly, so the data set is never stored.
"""

import ml_collections

from configs import common
from configs.deit import imagenet1k as deit

MODELS = deit.MODELS
# DeiT's augmentation, which the FDSL papers keep; the data keys (source, splits, classes) are ours.
DEIT_AUGMENTATION = ("image_size", "train_augment", "randaugment_layers", "randaugment_magnitude",
                     "mixup_alpha", "cutmix_alpha", "shuffle_buffer")


def pretrain_config(arg: str | None, *, family: str, num_categories: int,
                    instances_per_category: int, epochs: int = deit.EPOCHS) -> ml_collections.ConfigDict:
  """`arg` names the model (ViT-Ti_16, ViT-S_16 or ViT-B_16; default ViT-Ti_16)."""
  model = arg or MODELS[0]
  if model not in MODELS:
    raise ValueError(f"Config arg {arg!r}: the FDSL recipes train one of {MODELS}.")
  config = deit.get_config(model)
  augmentation = {key: config.dataset[key] for key in DEIT_AUGMENTATION}
  config.dataset = common.get_config().dataset  # not ImageNet's source, splits and classes
  config.dataset.update(augmentation)
  config.dataset.update(dict(source=family, num_categories=num_categories, num_classes=num_categories,
                             instances_per_category=instances_per_category, colour=True,
                             eval_instances_per_category=10))
  steps_per_epoch = num_categories * instances_per_category // config.batch_size
  config.total_steps = epochs * steps_per_epoch
  config.optimizer.warmup_steps = deit.WARMUP_EPOCHS * steps_per_epoch
  config.log_every = 100
  config.eval_every = 10 * steps_per_epoch
  config.checkpoint_every = 2 * steps_per_epoch
  return config
