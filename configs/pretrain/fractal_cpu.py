"""FDSL pretraining at CPU scale: the small models of the MNIST-sized studies on synthetic images.

Pretrains configs/fashion_mnist.py's models (vit_tiny, vit_small, resnet) at 32 px on formula-driven
images (vit_jax/synthetic), no natural image involved. The pretraining runs of
experiments/pretraining_scaling.py and experiments/transfer_study.py. Config arg: MODEL[,FAMILY],
FAMILY fractal (FractalDB-style IFS, the default) or contours (RCDB-style):
  python -m vit_jax.main --config=configs/pretrain/fractal_cpu.py:vit_tiny --workdir=runs/fdsl_vit_tiny
  python -m vit_jax.main --config=configs/pretrain/fractal_cpu.py:vit_tiny,contours \
      --workdir=runs/rcdb_vit_tiny --config.dataset.instances_per_category=100
100 categories, unlimited instances (`dataset.instances_per_category=N` fixes the set at 100 x N
images), 1,500 steps of 128 images (AdamW, the Fashion-MNIST recipe). Each evaluation reports the
accuracy on held-out instances and 10-shot linear probes on MNIST-5k. It reproduces no published
number: it is the papers' recipe in miniature, whose effect on the real targets the studies measure.
White shapes on black (`dataset.colour=False`), like the grayscale targets: a random hue per image is
a nuisance the small models spend their few steps on (vit_small, 500 steps: 10.5% held-out accuracy
in colour, 57.2% in white; vit_tiny 32.0% vs 49.7%).
"""

import ml_collections

from configs import common
from configs import fashion_mnist

FAMILIES = ("fractal", "contours")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model, *rest = (arg or "vit_tiny").split(",")
  family = rest[0] if rest else "fractal"
  if family not in FAMILIES or len(rest) > 1:
    raise ValueError(f"Config arg {arg!r}: expected MODEL or MODEL,FAMILY with FAMILY in {FAMILIES}.")
  config = common.get_config()
  config.model = fashion_mnist.model_config(model)

  config.dataset.update(dict(source=family, num_categories=100, instances_per_category=0,
                             eval_instances_per_category=10, image_size=32, colour=False,
                             train_augment="central_crop", shuffle_buffer=10_000))
  config.dataset.num_classes = config.dataset.get_ref("num_categories")

  config.batch_size = 128
  config.eval_batch_size = 500
  config.total_steps = 1_500
  config.optimizer.update(learning_rate=3e-3, warmup_steps=100, weight_decay=0.05)
  config.loss.label_smoothing = 0.1
  config.log_every = 100
  config.eval_every = config.get_ref("total_steps")  # once, at the end (follows overrides)
  config.checkpoint_every = 500
  config.fewshot = fashion_mnist.fewshot_config()
  config.fewshot.update(shots=(10,), protocol="big_vision", l2_reg=2.0**10)  # big_vision's probe
  return config
