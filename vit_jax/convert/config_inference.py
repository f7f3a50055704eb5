"""The vit_jax model config of converted parameters: read from their shapes, then checked against them."""

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from configs import models as model_configs
from vit_jax import models


def infer(params: dict, base: dict | None, fields: dict, model_name: str) -> ml_collections.ConfigDict:
  """The architecture from the tensors' shapes; the rest from `fields` (format), `base` (ours), defaults."""
  config = model_configs.get_model_config("ViT-B_16").to_dict()
  config.update(model_name=model_name, transformer=dict(config["transformer"], dropout_rate=0.))
  if base:
    config.update({k: v for k, v in base.items() if k != "transformer"})
    config["transformer"].update(base.get("transformer", {}))
  transformer, top = config["transformer"], params["Transformer"]
  blocks = [top[f"encoderblock_{i}"] for i in range(len(top)) if f"encoderblock_{i}" in top]
  kernel = params["embedding"]["kernel"]
  config.update(
      patches=dict(size=tuple(int(s) for s in kernel.shape[:2])), hidden_size=int(kernel.shape[-1]),
      **_pooling(config, params),
      pooled_norm="fc_norm" in params, posemb="learn" if "posembed_input" in top else "sincos2d",
      representation_size=int(params["pre_logits"]["kernel"].shape[-1]) if "pre_logits" in params else None,
      num_classes=int(params["head"]["kernel"].shape[-1]) if "head" in params else 0, resnet=None,
      distilled="dist" in params)
  transformer["num_layers"] = len(blocks)
  if blocks:
    transformer["num_heads"] = int(blocks[0]["MultiHeadDotProductAttention_1"]["query"]["kernel"].shape[1])
    transformer["mlp_dim"] = int(blocks[0]["MlpBlock_3"]["Dense_0"]["kernel"].shape[-1])
  if "conv_root" in params:
    stages = tuple(len([u for u in params[f"block{s}"] if u.startswith("unit")])
                   for s in range(1, len(params) + 1) if f"block{s}" in params)
    width = params["conv_root"]["kernel"].shape[-1] / 64
    config["resnet"] = dict(num_layers=stages, width_factor=int(width) if width.is_integer() else width)
  for key, value in fields.items():
    (transformer if key in ("dropout_rate", "attention_dropout_rate") else config)[key] = value
  return ml_collections.ConfigDict(_tuples(config))


def _pooling(config: dict, params: dict) -> dict:
  """`classifier` and `class_token`: the config's where the tensors agree with them, else what the tensors
  say. The shapes alone cannot tell averaging beside a class token from classifying it: they read as the
  token classifier, so a format that knows better says so in its `fields`."""
  has_cls, has_map = "cls" in params, "MAPHead_0" in params
  classifier, class_token = config["classifier"], config.get("class_token")
  if (classifier == "map") == has_map and (classifier == "token" if class_token is None
                                           else class_token) == has_cls:
    return dict(classifier=classifier, class_token=class_token)
  classifier = "map" if has_map else "token" if has_cls else "gap"
  return dict(classifier=classifier, class_token=True if has_cls and classifier != "token" else None)


def _tuples(tree: Any) -> Any:
  """JSON lists back to the tuples the model configs use."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, (list, tuple)) else tree


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Sets top-level config fields the caller gave `load`; an unknown key is an error."""
  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise ValueError(f"Unknown model config keys {unknown}; valid keys: {sorted(config.keys())}.")
  for key, value in overrides.items():
    config[key] = tuple(value) if isinstance(value, list) else value


def check_fits(config: ml_collections.ConfigDict, params: dict, source: str) -> None:
  """Builds the model abstractly and requires the converted params to have exactly its shapes."""
  posemb = params["Transformer"].get("posembed_input", {}).get("pos_embedding")
  tokens = (posemb.shape[1] - ("cls" in params) - ("dist" in params)) if posemb is not None else 1
  grid = math.isqrt(tokens)
  grid_hw = (grid, grid) if grid * grid == tokens else (1, tokens)
  stride = 4 * 2**max(len(config.resnet.num_layers) - 1, 0) if config.resnet is not None else 1
  channels = params["embedding"]["kernel"].shape[2] if config.resnet is None else 3
  shape = (1, *(g * p * stride for g, p in zip(grid_hw, config.patches.size)), channels)
  model = models.create(config, scan=False, remat=False)
  init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)["params"])
  expected = {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(init, sep="/").items()}
  got = {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(params, sep="/").items()}
  problems = [f"missing: {sorted(set(expected) - set(got))}"] if set(expected) - set(got) else []
  problems += [f"unexpected: {sorted(set(got) - set(expected))}"] if set(got) - set(expected) else []
  problems += [f"{k}: {got[k]} != model's {expected[k]}" for k in sorted(set(got) & set(expected))
               if got[k] != expected[k]]
  if problems:
    raise ValueError(f"{source}: the converted parameters do not fit the model they describe:\n  "
                     + "\n  ".join(problems))
