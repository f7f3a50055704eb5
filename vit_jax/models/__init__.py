"""Builds a model from its config: the one place where config fields become module attributes."""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from configs import models as model_configs
from vit_jax.models.vit import VisionTransformer

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create(model_config: ml_collections.ConfigDict, **overrides) -> nn.Module:
  """Returns the `VisionTransformer` that `model_config` describes, with `overrides` (e.g. num_classes).

  Apply it as `model.apply({'params': params}, images, train=False)`.
  """
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  config.update(overrides)
  if "model_name" in config:
    model_configs.check_model_name(config.pop("model_name"))
  unknown = sorted(set(config) - set(VisionTransformer.__dataclass_fields__))
  if unknown:
    valid = sorted(f for f in VisionTransformer.__dataclass_fields__ if f not in ("parent", "name"))
    raise ValueError(f"Unknown model config keys {unknown}; valid keys: {valid}.")
  dtype = config.get("dtype", "float32")
  if dtype not in _DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
  config["dtype"] = _DTYPES[dtype]
  config["patches"] = tuple(config["patches"]["size"])
  if config.get("resnet") is not None:
    config["resnet"] = dict(config["resnet"], num_layers=tuple(config["resnet"]["num_layers"]))
  transformer = dict(config["transformer"])
  if config.get("fused_attention") and transformer.get("attention_dropout_rate", 0.):
    raise ValueError("model.fused_attention needs transformer.attention_dropout_rate == 0 "
                     "(jax.nn.dot_product_attention has no dropout); set one of them off.")
  config["transformer"] = transformer
  for key in ("pixel_mean", "pixel_std"):
    if key in config:
      config[key] = tuple(config[key])
  return VisionTransformer(**config)
