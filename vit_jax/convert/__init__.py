"""Brings ViT weights in from timm, Hugging Face and big_vision checkpoints, and hands them back.

    config, params = convert.load("vit_small.safetensors", "timm", num_heads=6)
    logits = models.create(config).apply({"params": params}, images)   # images NHWC in [-1, 1]
    convert.save(params, config, "out/hf_model", "hf")

    python -m vit_jax.convert --from=timm --to=vit_jax vit_small.safetensors out/
    python -m vit_jax.convert --from=vit_jax --to=hf out/ out/hf_model

Every format passes through the official flat layout of `vit_jax.checkpoint` ('/'-joined names,
`Transformer/encoderblock_{i}/...`), one module per format: `timm`, `hf` (a renaming of timm's names),
`npz` (big_vision and vit_jax). Each source tensor is consumed exactly once and a name we do not
recognise is an error, never skipped.

Shapes give the architecture except the number of heads; for timm pass `num_heads` or keep a
`config.json` (timm hub `model_args`, or a top-level `num_heads`) beside the weights. The returned config
also records what the shapes cannot say -- exact or tanh GELU, layer-norm epsilon, the input normalisation
the weights expect, where the final norm sits, whether a gap or MAP head sits beside a class token (timm
`global_pool='avg'` with a class token, e.g. MAE, is `classifier='gap', class_token=True`; timm's
`global_pool='map'` with a class token, which drops it before the attention pool, is `classifier='map',
class_token=True, map_class_token=False`) -- so the model
predicts what the source model did. Exports embed the vit_jax model config (safetensors metadata or
config.json), so a round trip is exact.
"""

import os
from typing import Any

from etils import epath
import ml_collections

from vit_jax import checkpoint
from vit_jax.convert import common
from vit_jax.convert import config_inference
from vit_jax.convert import hf
from vit_jax.convert import npz
from vit_jax.convert import timm

FORMATS = ("timm", "hf", "big_vision", "vit_jax")
CONFIG_KEY = common.CONFIG_KEY  # our model config (JSON) inside exported safetensors / config.json
_LOADERS = {"timm": timm.load, "hf": hf.load, "big_vision": npz.load_big_vision, "vit_jax": npz.load_vit_jax}
_SAVERS = {"timm": timm.save, "hf": hf.save, "big_vision": npz.save_big_vision, "vit_jax": npz.save_vit_jax}


def load(path: str | os.PathLike, source_format: str, *, num_heads: int | None = None,
         **overrides: Any) -> tuple[ml_collections.ConfigDict, dict]:
  """Reads a checkpoint of `source_format` (one of FORMATS) into (model config, params).

  `path` is the weights file or the folder holding it (for `hf`, the folder `save_pretrained` wrote).
  `num_heads` is needed for a timm state dict without a config.json that names it. `overrides` set
  top-level model config fields afterwards, e.g. `scan=True` (then the blocks come stacked) or
  `pixel_mean=..., pixel_std=...` for a timm checkpoint whose normalisation the files do not declare.
  """
  if source_format not in _LOADERS:
    raise ValueError(f"Unknown source format {source_format!r}; use one of {', '.join(FORMATS)}.")
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"No {source_format} checkpoint at {path}.")
  flat, base, fields = _LOADERS[source_format](path, num_heads)
  params = checkpoint.params_from_flat(flat)
  config = config_inference.infer(params, base, fields, model_name=f"{source_format}:{path.name}")
  if num_heads is not None and num_heads != config.transformer.num_heads:
    raise ValueError(f"num_heads={num_heads} but the checkpoint at {path} has "
                     f"{config.transformer.num_heads} heads.")
  config_inference.apply_overrides(config, overrides)
  config_inference.check_fits(config, params, str(path))
  if config.scan:
    params = checkpoint.params_from_flat(checkpoint.flat_from_params(params), scan=True)
  return config, params


def save(params: dict, model_config: ml_collections.ConfigDict, path: str | os.PathLike,
         target_format: str) -> epath.Path:
  """Writes `params` (scanned or not) in `target_format`; returns the weights file written.

  `vit_jax`: official `.npz` (+ `config.json` beside it). `timm`: a `.safetensors` path gets the state
  dict alone (config in its metadata); any other path is a folder with `model.safetensors` and a timm hub
  `config.json`. `hf`: a folder as `save_pretrained` writes it. `big_vision`: `.npz` with `params/`,
  Linen numbering, stacked blocks and the position embedding without the class-token row.
  """
  if target_format not in _SAVERS:
    raise ValueError(f"Unknown target format {target_format!r}; use one of {', '.join(FORMATS)}.")
  flat = checkpoint.flat_from_params(params)
  return _SAVERS[target_format](flat, model_config, epath.Path(path))


def __getattr__(name: str) -> Any:
  """`convert.main`, the command line, imported on first use: `python -m vit_jax.convert` runs it as
  `__main__` and must not find it imported already."""
  if name == "main":
    from vit_jax.convert import __main__  # pylint: disable=g-import-not-at-top
    return __main__.main
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
