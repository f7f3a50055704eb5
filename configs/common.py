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
      source="tfds",           # tfds | image_folder | digits | fashion_mnist | mnist5k | fractal | contours
      name="",                 # tfds name (e.g. "cifar10"); unused by the other sources
      data_dir="",             # tfds data_dir, image-folder root, or the Fashion-MNIST folder
      train_split="train",     # split names accept slicing: "train[:10%]", "train[:5000]"
      eval_split="test",
      num_classes=10,
      label="label",           # tfds: the label feature, or a derived label (vit_jax/labels.py)
      eval_name="",            # tfds: the eval split's data set, if another ("imagenet2012_real")
      eval_label="",           # tfds: the eval split's label feature, if another ("real_label")
      image_size=224,          # the model's input resolution
      train_augment="squash_crop",  # inception_crop | resmall_crop | squash_crop | resize | central_crop
      eval_preprocess="central_crop",  # central_crop | resize | resmall_central_crop (whose: preprocess.py)
      random_flip=True,        # mirror training images (off for digits and text)
      mixup_alpha=0.0,         # > 0 mixes pairs of training images and labels
      cutmix_alpha=0.0,        # > 0 pastes boxes between pairs (with mixup too: one of them per batch)
      randaugment_layers=0,    # > 0: RandAugment ops per image (vit_jax/randaugment.py; AugReg uses 2)
      randaugment_magnitude=0.0,  # its magnitude, 0-20 on big_vision's scale (AugReg: 0, 10, 15, 20)
      randaugment_reference_size=0,  # 0: translate/cutout in big_vision's pixels; N: scaled by image_size/N
      shuffle_buffer=50_000,   # examples per shuffle block (each epoch: files shuffled, then blocks)
      on_bad_image="skip",     # image folders: skip (counted in the log) | fail
      image_index_dir="",      # image folders: where the index of unreadable files goes ("": data_dir)
      parallel_files=4,        # tfds files read at once per process, same order as 1 (one by one);
                               # memory: up to twice as many whole files, read ahead
      prefetch=2,              # batches prepared ahead on the devices
      threads=0,               # tf.data's private thread pool per pipeline (0: one per CPU core)
      ram_budget_gb=0.0,       # tf.data autotune's RAM limit (0: TensorFlow's default, half the RAM)
  ))
  # Synthetic sources (fractal | contours, vit_jax/synthetic): images rendered from formulas.
  config.dataset.update(dict(
      num_categories=1000,     # classes of the synthetic data set (<= num_classes)
      instances_per_category=0,  # train images per category; 0: unlimited (never repeated)
      eval_instances_per_category=10,  # held-out instances per category in the test split
      colour=True,             # a random colour per image (else white on black)
      data_seed=0,             # the data set: categories and instances follow from it
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
      mu_dtype="",             # adam(w) first moment: "" (the params' float32) | bfloat16 (half the memory)
  ))
  config.loss = ml_collections.ConfigDict(dict(
      name="softmax_xent",     # softmax_xent | sigmoid_xent
      label_smoothing=0.0,
  ))

  config.ema = ml_collections.ConfigDict(dict(
      decay=0.0,               # > 0 keeps a moving average of the params (vit_jax/ema.py), e.g. 0.9999
      warmup_power=0.0,        # > 0: timm ModelEmaV3 warm-up, decay_n = min(decay, 1 - n^-power); 2/3
  ))

  config.distillation = ml_collections.ConfigDict(dict(
      type="",                 # "" (off) | hard | soft: DeiT distillation (needs model.distilled=True)
      teacher="",              # one of our workdirs, or an .npz (then name teacher_model)
      teacher_model="",        # .npz teachers: configs/models.py name, e.g. ViT-B_16
      teacher_image_size=0,    # .npz teachers: their input size (0: the student's)
      alpha=0.5,               # weight of the distillation term (DeiT: 1/2)
      tau=1.0,                 # soft distillation temperature
  ))

  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,                 # -1: all devices not used by the other axis
      model=1,                 # tensor parallelism: devices that split each block (sharding_rules)
      dcn_data=1,              # multi-slice TPU: slices the data axis spans (over the data-centre network)
  ))
  config.sharding = "data"     # data (replicated params) | fsdp (params and optimizer state sharded)
  # (regex on the parameter path, spec of its trailing dims) over the 'model' axis, first match wins:
  # attention heads and MLP hidden units split Megatron-style. No effect while mesh.model is 1.
  config.sharding_rules = (
      (r"MlpBlock_\d+/Dense_0/kernel$", (None, "model")),
      (r"MlpBlock_\d+/Dense_0/bias$", ("model",)),
      (r"MlpBlock_\d+/Dense_1/kernel$", ("model", None)),
      (r"(query|key|value)/kernel$", (None, "model", None)),
      (r"(query|key|value)/bias$", ("model", None)),
      (r"MultiHeadDotProductAttention_\d+/out/kernel$", ("model", None, None)),
  )

  # CPU only: split batches over one XLA host device per core (vit_jax/cpu_devices.py); it trains and
  # evaluates as fast or faster on every workload measured (benchmarks/RESULTS.md). Ignored on GPU/TPU.
  config.host_device_per_core = True
  # CPU only: malloc keeps freed blocks for reuse instead of unmapping them (vit_jax/host_memory.py);
  # the same results, the larger study models' steps 1.1-1.45x faster. Ignored on GPU/TPU.
  config.reuse_freed_host_memory = True
  config.peak_flops_per_device = 0.0  # for MFU where the device is not in metrics' table (0: unknown)
  config.init_checkpoint = ""  # official .npz or one of our workdirs; adapted to this model
  config.init_keep_head = False  # True: keep init_checkpoint's head (same classes) instead of a new one
  config.init_use_ema = False  # init_checkpoint is a workdir: start from its EMA params
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  config.keep_checkpoint_every = 0  # > 0: also keep for ever every checkpoint at a multiple of this step
  config.compilation_cache = "workdir"  # JAX's persistent cache: workdir | a shared folder | "" (off)
  config.profile_steps = ()    # (first, last): trace these steps to workdir/plugins/profile (TensorBoard)
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
