"""Shared defaults of every experiment: data, optimizer, schedule, mesh, logging and checkpoints.

Experiment configs start from `get_config()` here and override what they change. Every key is read
somewhere; a typo in an override (`--config.optimizer.lerning_rate=...`) fails at start-up.
"""

import ast
from typing import Any

import ml_collections

from configs import models


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = models.get_model_config("ViT-B_16")

  config.dataset = ml_collections.ConfigDict(dict(
      source="tfds",           # tfds | image_folder | digits | fashion_mnist | mnist5k
      name="",                 # tfds name (e.g. "cifar10"); unused by the other sources
      data_dir="",             # tfds data_dir, image-folder root, or the Fashion-MNIST folder
      train_split="train",     # split names accept slicing: "train[:10%]", "train[:5000]"
      eval_split="test",
      num_classes=10,
      label="label",           # tfds: the label feature, or a derived label (vit_jax/labels.py)
      eval_name="",            # tfds: the eval split's data set, if another ("imagenet2012_real")
      eval_label="",           # tfds: the eval split's label feature, if another ("real_label")
      image_size=224,          # the model's input resolution
      train_augment="finetune",  # pretrain (inception crop + flip) | finetune (resize, random crop, flip) | none
      random_flip=True,        # mirror training images (off for digits and text)
      mixup_alpha=0.0,         # > 0 mixes pairs of training images and labels
      shuffle_buffer=50_000,
      on_bad_image="skip",     # image folders: skip (counted in the log) | fail
      prefetch=2,              # batches prepared ahead on the devices
  ))

  config.batch_size = 512
  config.eval_batch_size = 512
  config.total_steps = 10_000

  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw",            # adamw | adam | sgd
      learning_rate=1e-3,
      schedule="cosine",       # cosine | linear | constant (after the warmup)
      warmup_steps=500,
      end_learning_rate=0.0,
      b1=0.9,
      b2=0.999,
      weight_decay=0.1,        # decoupled, on kernels only; 0 for SGD fine-tuning
      momentum=0.9,            # sgd only
      grad_clip_norm=1.0,      # global norm; 0 disables clipping
      accum_steps=1,           # micro-batches per step (gradient accumulation)
      backbone_lr_multiplier=1.0,  # 0 freezes everything but the head
  ))
  config.loss = ml_collections.ConfigDict(dict(
      name="softmax_xent",     # softmax_xent | sigmoid_xent
      label_smoothing=0.0,
  ))

  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,                 # -1: all devices not used by the other axis
      model=1,
  ))
  config.sharding = "data"     # data (replicated params) | fsdp (params and optimizer state sharded)

  # CPU only: split batches over one XLA host device per core (vit_jax/cpu_devices.py). Off: the digits
  # command ran 1.7x slower with it (benchmarks/RESULTS.md), though the bare train step ran faster.
  config.host_device_per_core = False
  config.peak_flops_per_device = 0.0  # for MFU where the device is not in metrics' table (0: unknown)
  config.init_checkpoint = ""  # official .npz or one of our workdirs; adapted to this model
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  return config


def parse_override(pair: str) -> tuple[str, Any]:
  """'KEY=VALUE' -> (key, value), the value a Python literal where it parses (20, 0.1, (4, 4)), else
  the string ('train[:64]', 'gap')."""
  key, sep, text = pair.partition("=")
  if not sep:
    raise ValueError(f"Override {pair!r} is not KEY=VALUE (e.g. transformer.num_layers=2).")
  try:
    return key, ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return key, text


def set_override(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
  """Sets the dotted `key` of `config`; a key it lacks is an error naming `where` the config is from."""
  *parents, leaf = key.split(".")
  node = config
  for name in parents:
    node = node[name]
  if leaf not in node:
    raise ValueError(f"Override {key}={value!r}: {where} has no key {key!r}.")
  node[leaf] = value
