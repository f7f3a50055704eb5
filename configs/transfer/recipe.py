"""The paper's fine-tuning recipe, shared by every config in this folder.

Dosovitskiy et al. 2021 (arXiv:2010.11929), Appendix B.1.1 and Table 4: SGD with momentum 0.9, no weight
decay, gradient clipping at global norm 1, batch 512, cosine decay after a linear warmup, resolution 384
(224 as an option), from a published ImageNet-21k checkpoint whose head is replaced by a zero-initialised
one and whose position embeddings are resized to the new patch grid (`vit_jax.checkpoint.adapt`).
Pre-processing is that of the code that produced the published numbers, vision_transformer's
(`vit_jax/input_pipeline.py`): training images get an inception crop and a random flip
(`train_augment="inception_crop"`), evaluation images are squashed to the resolution
(`eval_preprocess="resize"`, no crop). big_vision's transfer variants are there to compare:
`resmall_crop` / `resmall_central_crop` (vit_jax/preprocess.py).
Each data set sets its steps and learning-rate grid. The paper picked the learning rate on a held-out
part of the training set and then trained on all of it: `lr_sweep` lists the grid and `sweep_splits`
the (train, validation) splits that `experiments/transfer_table.py --sweep` uses for that choice.

`published` records what the paper (or the official repository) reports for this model, data set and
resolution: `accuracy` as a fraction (None where nothing was published), its `source`, and the
`metric` ('top1', or 'real' for the ReaL labels).

The ViT-H/14 targets are the paper's, but the ImageNet-21k ViT-H/14 checkpoint they start from
(`pretrained.CHECKPOINTS['ViT-H_14']`) was later withdrawn by vision_transformer (see `H14_NOTE`).
"""

from collections.abc import Mapping, Sequence

import ml_collections

from configs import common
from configs import models
from vit_jax import pretrained

H14_NOTE = ("vision_transformer later withdrew its ImageNet-21k ViT-H/14 checkpoint, which performed worse "
            "than its B/16 and L/16 ones; its README lists B/16, B/32, L/16 and L/32 only. The ViT-H_14 "
            "targets here are the paper's Table 5 figures, which that checkpoint may not reach.")
DEFAULT_MODEL = "ViT-B_16"
DEFAULT_RESOLUTION = 384
# Memory knob, not part of the recipe: the official code's default (512 = 8 micro-batches of 64).
ACCUM_STEPS = 8
TABLE5 = ("Dosovitskiy et al. 2021, Table 5: ImageNet-21k pre-training, fine-tuned at 384 "
          "(the official repository's runs of this recipe: its README, 'Expected results')")
README_224 = ("google-research/vision_transformer README: ImageNet-21k models fine-tuned on ImageNet "
              "at 224 ('-224' checkpoints)")
# The grid of paper Table 4 for every data set but ImageNet and VTAB.
LR_SWEEP = (0.001, 0.003, 0.01, 0.03)


def parse_arg(arg: str | None, default_model: str = DEFAULT_MODEL) -> tuple[str, int]:
  """'MODEL[,RESOLUTION]' (e.g. 'ViT-L_16,224') -> (model name, resolution)."""
  parts = (arg or "").split(",") if arg else []
  if len(parts) > 2:
    raise ValueError(f"Config arg {arg!r}: expected MODEL[,RESOLUTION], e.g. ViT-B_16,224.")
  model = parts[0] if parts and parts[0] else default_model
  resolution = int(parts[1]) if len(parts) == 2 else DEFAULT_RESOLUTION
  return model, resolution


def checkpoint_name(model: str) -> str:
  """The published ImageNet-21k checkpoint of `model`: the paper's if there is one, else AugReg's."""
  for name in (model, f"augreg/{model}"):
    if name in pretrained.CHECKPOINTS:
      return name
  upstream = sorted(n for n in pretrained.CHECKPOINTS if not n.endswith("-imagenet2012"))
  raise ValueError(f"No published ImageNet-21k checkpoint for {model!r}; models with one: {upstream}.")


def finetune_config(
    *,
    model: str,
    resolution: int,
    tfds_name: str,
    num_classes: int,
    train_split: str,
    eval_split: str,
    total_steps: int,
    warmup_steps: int,
    learning_rate: float,
    lr_sweep: Sequence[float],
    sweep_splits: tuple[str, str],
    published: Mapping[tuple[str, int], float],
    source: str,
    metric: str = "top1",
    train_augment: str = "inception_crop",
    eval_preprocess: str = "resize",
    random_flip: bool = True,
) -> ml_collections.ConfigDict:
  """The whole experiment: `published` maps (model, resolution) to the accuracy in percent."""
  config = common.get_config()
  config.model = models.get_model_config(model)
  config.init_checkpoint = checkpoint_name(model)

  config.dataset.update(source="tfds", name=tfds_name, num_classes=num_classes,
                        train_split=train_split, eval_split=eval_split, image_size=resolution,
                        train_augment=train_augment, eval_preprocess=eval_preprocess,
                        random_flip=random_flip)
  config.batch_size = 512
  config.eval_batch_size = 512
  config.total_steps = total_steps
  config.optimizer.update(name="sgd", momentum=0.9, weight_decay=0.0, grad_clip_norm=1.0,
                          schedule="cosine", warmup_steps=warmup_steps, end_learning_rate=0.0,
                          learning_rate=learning_rate, accum_steps=ACCUM_STEPS)
  config.eval_every = config.checkpoint_every = max(total_steps // 10, 100)
  config.log_every = 10 if total_steps <= 1000 else 50

  config.lr_sweep = tuple(lr_sweep)
  config.sweep_splits = tuple(sweep_splits)
  config.published = published_accuracy(published, model, resolution, source, metric)
  return config


def published_accuracy(published: Mapping[tuple[str, int], float], model: str, resolution: int,
                       source: str, metric: str = "top1") -> ml_collections.ConfigDict:
  """The `published` field: the percentage `published[(model, resolution)]` as a fraction, or None."""
  percent = published.get((model, resolution))
  return ml_collections.ConfigDict(dict(
      accuracy=None if percent is None else round(percent / 100, 6),
      source=source if percent is not None else f"none published for {model} at {resolution}",
      metric=metric,
  ))
