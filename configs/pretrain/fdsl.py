"""The papers' FDSL pretraining recipe for ViTs (shared by fractaldb_*.py, exfractaldb_21k.py,
rcdb_21k.py): DeiT's training of ViT-Ti/S/B at 224 px on formula-driven categories.

Kataoka et al. (CVPR 2022, "Replacing Labeled Real-image Datasets with Auto-generated Contours") and
Nakashima et al. (AAAI 2022) pretrain ViTs with DeiT's training code; the settings here are DeiT's
defaults (AdamW, weight decay 0.05, label smoothing 0.1, cosine schedule with 5 warmup epochs, 300
epochs, learning rate 5e-4 x batch / 512), not re-checked against the papers' tables. Augmentation:
inception crop, flip and mixup (DeiT's RandAugment, CutMix and random erasing are not in this
codebase). Images are rendered on the fly, so the data set is never stored.
"""

import ml_collections

from configs import common
from configs import models

MODELS = ("ViT-Ti_16", "ViT-S_16", "ViT-B_16")


def pretrain_config(arg: str | None, *, family: str, num_categories: int,
                    instances_per_category: int, epochs: int = 300) -> ml_collections.ConfigDict:
  """`arg` names the model (ViT-Ti_16, ViT-S_16 or ViT-B_16; default ViT-Ti_16)."""
  model = arg or MODELS[0]
  if model not in MODELS:
    raise ValueError(f"Config arg {arg!r}: the FDSL recipes train one of {MODELS}.")
  config = common.get_config()
  config.model = models.get_model_config(model)
  config.dataset.update(dict(source=family, num_categories=num_categories,
                             num_classes=num_categories,
                             instances_per_category=instances_per_category, colour=True,
                             image_size=224, train_augment="inception_crop", mixup_alpha=0.8,
                             eval_instances_per_category=10, shuffle_buffer=250_000))
  config.batch_size = 1024
  config.eval_batch_size = 1024
  images = num_categories * instances_per_category
  steps_per_epoch = images // config.batch_size
  config.total_steps = epochs * steps_per_epoch
  config.optimizer.update(name="adamw", learning_rate=5e-4 * config.batch_size / 512,
                          warmup_steps=5 * steps_per_epoch, weight_decay=0.05, grad_clip_norm=1.0)
  config.loss.label_smoothing = 0.1
  config.log_every = 100
  config.eval_every = 10 * steps_per_epoch
  config.checkpoint_every = 2 * steps_per_epoch
  return config
