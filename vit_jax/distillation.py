"""The frozen teacher of DeiT distillation: loaded from a workdir or a converted .npz checkpoint.

The train step (vit_jax/steps.py) runs the teacher on the student's (augmented, mixed) batch inside the
same jitted computation, on the same mesh; its params are an argument of the step, never updated.
Images are resized to the teacher's resolution when the two differ.
"""

import dataclasses
from typing import Any

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vit_jax import checkpoint
from vit_jax import models
from vit_jax import workdir as workdir_lib

from configs import models as model_configs


@dataclasses.dataclass(frozen=True)
class Teacher:
  model: nn.Module
  image_size: int

  def logits(self, params: Any, images: jax.Array) -> jax.Array:
    """The teacher's logits [B, C] of student-sized images [B, S, S, 3], no gradient."""
    if images.shape[1:3] != (self.image_size, self.image_size):
      images = jax.image.resize(images, (images.shape[0], self.image_size, self.image_size, 3), "bilinear")
    logits = self.model.apply({"params": params}, images, train=False)
    return jax.lax.stop_gradient(logits)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` distils (distillation.type set); checks the keys."""
  kind = config.distillation.type
  if not kind:
    return False
  if not config.model.get("distilled"):
    raise ValueError(f"distillation.type={kind!r} needs model.distilled=True (the distillation token).")
  if not config.distillation.teacher:
    raise ValueError("distillation.type is set but distillation.teacher is empty: give a workdir or an "
                     ".npz checkpoint (then also distillation.teacher_model).")
  if not 0. <= config.distillation.alpha <= 1. or config.distillation.tau <= 0:
    raise ValueError(f"distillation.alpha={config.distillation.alpha} must be in [0, 1] and "
                     f"distillation.tau={config.distillation.tau} > 0.")
  return True


def load_teacher(config: ml_collections.ConfigDict) -> tuple[Teacher, Any]:
  """(teacher, its params on the host) from `config.distillation`.

  A workdir brings its own model config and resolution; an .npz needs `distillation.teacher_model` (a
  name of configs/models.py) and `distillation.teacher_image_size`, and must have the student's classes.
  """
  path = epath.Path(config.distillation.teacher)
  num_classes = config.dataset.num_classes
  if (path / workdir_lib.CONFIG_FILE).exists():
    teacher_config, params = workdir_lib.load_params(path)
    model = models.create(teacher_config.model, num_classes=teacher_config.dataset.num_classes)
    image_size = teacher_config.dataset.image_size
  else:
    if not config.distillation.teacher_model:
      raise ValueError(f"distillation.teacher={path} is not a workdir: name its architecture in "
                       "distillation.teacher_model (e.g. ViT-B_16) and its distillation.teacher_image_size.")
    flat = checkpoint.load_npz(path)
    head = flat.get("head/kernel")
    if head is None or head.shape[-1] != num_classes:
      raise ValueError(f"Teacher {path} must predict the student's {num_classes} classes "
                       f"(config.dataset.num_classes); its head/kernel is "
                       f"{None if head is None else head.shape}.")
    model_config = model_configs.get_model_config(config.distillation.teacher_model)
    model = models.create(model_config, num_classes=num_classes)
    image_size = config.distillation.teacher_image_size or config.dataset.image_size
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False)["params"])
    params = checkpoint.fit(checkpoint.params_from_flat(flat), shapes, model_config)  # exact: its head too
  if model.num_classes != num_classes:
    raise ValueError(f"Teacher {path} predicts {model.num_classes} classes; the student "
                     f"{num_classes} (config.dataset.num_classes).")
  return Teacher(model, image_size), params
