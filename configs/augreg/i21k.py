"""AugReg ImageNet-21k pretraining (Steiner et al. 2021, "How to train your ViT?"), as big_vision runs it.

Config arg: MODEL,LEVEL[,reg][,EPOCHS], MODEL one of ViT-Ti_16 / ViT-S_16 / ViT-B_16, LEVEL one of
none / light1 / light2 / medium1 / medium2 / strong1 / strong2, `reg` for dropout 0.1 + stochastic
depth 0.1 (the paper's other regularisation setting; default none), EPOCHS 30 or 300 (default 300):
  python -m vit_jax.main --config=configs/augreg/i21k.py:ViT-B_16,medium1 --workdir=runs/augreg-b16
The levels are big_vision's `configs/vit_i21k.py` (RANDAUG_DEF, MIXUP_DEF; its mixup `p` is the Beta
alpha): RandAugment(2, M) with M = 0 / 10 / 15 / 15 / 20 / 20 and mixup alpha 0 / 0.2 / 0.2 / 0.5 /
0.5 / 0.8 for light1 ... strong2. The rest is that config too: inception crop + flip at 224, sigmoid
cross-entropy over 21,843 classes, Adam (0.9, 0.999), lr 1e-3, 10k warmup steps then cosine, clip 1,
batch 4096, eval on full[:25600] and training on full[51200:] of tfds `imagenet21k` (not public in
TFDS: build it from the ImageNet-21k release first). Weight decay, dropout and stochastic depth follow
the recommended checkpoints' names (vit_jax/pretrained.py, e.g.
`B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0`): wd 0.03 for Ti/S, 0.1 for B. What each
reproduces: that checkpoint (the upstream ImageNet-21k model); its published fine-tuning accuracies are
in the AugReg paper and the vision_transformer README, not re-measured here. One difference: the
released checkpoints use the class token, which this config keeps (big_vision's file pools with GAP).
Steps: EPOCHS x about 14M images (ViT paper, Section 4.1) / 4096, an approximation of big_vision's
`num_epochs`.
"""

import ml_collections

from configs import common
from configs import models

RANDAUG_MAGNITUDE = {"none": None, "light1": 0, "light2": 10, "medium1": 15, "medium2": 15,
                     "strong1": 20, "strong2": 20}
MIXUP_ALPHA = {"none": 0.0, "light1": 0.0, "light2": 0.2, "medium1": 0.2, "medium2": 0.5,
               "strong1": 0.5, "strong2": 0.8}
WEIGHT_DECAY = {"ViT-Ti_16": 0.03, "ViT-S_16": 0.03, "ViT-B_16": 0.1}
IMAGENET21K_IMAGES = 14_000_000
BATCH_SIZE = 4096


def parse_arg(arg: str | None) -> tuple[str, str, bool, int]:
  parts = (arg or "ViT-B_16,medium1").split(",")
  model, level, options = parts[0], parts[1] if len(parts) > 1 else "medium1", parts[2:]
  reg = "reg" in options
  epochs = [int(o) for o in options if o != "reg"]
  if model not in WEIGHT_DECAY or level not in RANDAUG_MAGNITUDE or len(epochs) > 1 or (
      epochs and epochs[0] not in (30, 300)):
    raise ValueError(f"Config arg {arg!r}: expected MODEL,LEVEL[,reg][,EPOCHS] with MODEL in "
                     f"{list(WEIGHT_DECAY)}, LEVEL in {list(RANDAUG_MAGNITUDE)}, EPOCHS 30 or 300.")
  return model, level, reg, epochs[0] if epochs else 300


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model, level, reg, epochs = parse_arg(arg)
  config = common.get_config()
  config.model = models.get_model_config(model)
  config.model.transformer.dropout_rate = 0.1 if reg else 0.0
  config.model.stochastic_depth = 0.1 if reg else 0.0

  config.dataset.update(
      source="tfds", name="imagenet21k", train_split="full[51200:]", eval_split="full[:25600]",
      num_classes=21843, image_size=224, train_augment="inception_crop", shuffle_buffer=250_000,
      mixup_alpha=MIXUP_ALPHA[level])
  if RANDAUG_MAGNITUDE[level] is not None:
    config.dataset.update(randaugment_layers=2, randaugment_magnitude=float(RANDAUG_MAGNITUDE[level]))

  config.loss.name = "sigmoid_xent"
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = 1024
  config.total_steps = epochs * IMAGENET21K_IMAGES // BATCH_SIZE
  config.optimizer.update(name="adamw", learning_rate=1e-3, b1=0.9, b2=0.999, schedule="cosine",
                          warmup_steps=10_000, weight_decay=WEIGHT_DECAY[model], grad_clip_norm=1.0)
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 1000
  return config
