"""DeiT (Touvron et al., ICML 2021): ViT-{Ti,S,B}/16 trained on ImageNet-1k alone, optionally distilled.

Config arg: MODEL[,distilled], MODEL one of ViT-Ti_16 / ViT-S_16 / ViT-B_16 (DeiT-tiny / small / base).
  python -m vit_jax.main --config=configs/deit/imagenet1k.py:ViT-B_16 --workdir=runs/deit-b
  python -m vit_jax.main --config=configs/deit/imagenet1k.py:ViT-B_16,distilled --workdir=runs/deit-b-dist \
      --config.distillation.teacher=runs/teacher  # a workdir, or an .npz plus distillation.teacher_model
What it reproduces (facebookresearch/deit README_deit.md, ImageNet val top-1): DeiT-tiny 72.2, small
79.9, base 81.8; distilled (hard, RegNetY-16GF teacher of 82.9%) tiny 74.5, small 81.2, base 83.4.
Not re-measured here (no ImageNet, no RegNetY here); `PUBLISHED` keeps the numbers.
The schedule is the repository's `main.py` defaults: 300 epochs at batch 1024, AdamW lr 5e-4 x 1024 /
512 = 1e-3, weight decay 0.05, 5 warmup epochs then cosine to 1e-5, no gradient clipping, label
smoothing 0.1, stochastic depth 0.1, no dropout, mixup 0.8 / CutMix 1.0 (one of them per batch), EMA
0.99996, hard distillation with alpha 1/2. Differences, which the paper's ablation (Table 8) rates at a
few tenths: RandAugment is big_vision's RandAugment(2, 9) instead of timm's rand-m9-mstd0.5-inc1,
there is no random erasing (0.25) nor repeated augmentation, and crops resize bilinearly, not bicubically.
"""

import ml_collections

from configs import common
from configs import models

MODELS = ("ViT-Ti_16", "ViT-S_16", "ViT-B_16")
# README_deit.md, top-1 % on ImageNet val: (plain, distilled).
PUBLISHED = {"ViT-Ti_16": (72.2, 74.5), "ViT-S_16": (79.9, 81.2), "ViT-B_16": (81.8, 83.4)}
IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH_SIZE = 1024
EPOCHS = 300
WARMUP_EPOCHS = 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model, *options = (arg or "ViT-B_16").split(",")
  if model not in MODELS or options not in ([], ["distilled"]):
    raise ValueError(f"Config arg {arg!r}: expected MODEL[,distilled] with MODEL in {MODELS}.")
  distilled = bool(options)
  config = common.get_config()
  config.model = models.get_model_config(model)
  config.model.transformer.dropout_rate = 0.0
  config.model.stochastic_depth = 0.1
  config.model.distilled = distilled

  config.dataset.update(
      source="tfds", name="imagenet2012", train_split="train", eval_split="validation", num_classes=1000,
      image_size=224, train_augment="inception_crop", randaugment_layers=2, randaugment_magnitude=9.0,
      mixup_alpha=0.8, cutmix_alpha=1.0, shuffle_buffer=250_000)
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH_SIZE
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = 1024
  config.total_steps = EPOCHS * steps_per_epoch
  config.optimizer.update(name="adamw", learning_rate=5e-4 * BATCH_SIZE / 512, weight_decay=0.05,
                          schedule="cosine", warmup_steps=WARMUP_EPOCHS * steps_per_epoch,
                          end_learning_rate=1e-5, grad_clip_norm=0.0)
  config.loss.label_smoothing = 0.1
  config.ema.decay = 0.99996
  if distilled:
    config.distillation.update(type="hard", alpha=0.5, tau=1.0)  # teacher: --config.distillation.teacher
  config.eval_every = steps_per_epoch * 10
  config.checkpoint_every = steps_per_epoch
  return config
