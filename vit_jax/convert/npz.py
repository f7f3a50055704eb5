"""`.npz` checkpoints: big_vision's (`params/` prefix, Linen numbering, stacked blocks, a position
embedding without the class-token row) and vit_jax's official ones (`vit_jax.checkpoint`'s layout)."""

import re

from absl import logging
from etils import epath
import ml_collections
import numpy as np

from vit_jax import checkpoint
from vit_jax.convert import common

# Official (the authors' per-block modules) -> big_vision's Linen numbering inside a block.
_BIG_VISION_NAMES = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
                     "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}


def load_big_vision(path: epath.Path, num_heads: int | None):
  """(official flat params, None, config fields); big_vision's ViT has the tanh GELU and epsilon 1e-6."""
  del num_heads  # explicit in the kernels' shapes
  file = common.find_file(path, (), "*.npz", "big_vision checkpoint")
  flat = checkpoint.load_npz(file)
  if any(k.startswith("params/") for k in flat):
    dropped = sorted(k for k in flat if not k.startswith("params/"))
    if dropped:
      logging.info("%s: leaving out the non-parameter arrays %s", file, dropped[:5])
    flat = {k.removeprefix("params/"): v for k, v in flat.items() if k.startswith("params/")}
  if "pos_embedding" in flat and common.POSEMB in flat:
    raise ValueError(f"{file} has two position embeddings, pos_embedding and {common.POSEMB}.")
  posemb = flat.pop("pos_embedding") if "pos_embedding" in flat else flat.pop(common.POSEMB, None)
  if posemb is not None:
    flat[common.POSEMB] = common.with_class_row(posemb, "cls" in flat, None, str(file))
  return flat, None, dict(gelu_approximate=True, layer_norm_epsilon=1e-6)


def save_big_vision(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  """`.npz` with `params/`, Linen numbering, stacked blocks and the position embedding without the
  class-token row (folded into `cls`, as big_vision adds none to the class token)."""
  if (not config.gelu_approximate or config.pooled_norm or config.layer_norm_epsilon != 1e-6
      or config.resnet is not None):
    raise ValueError("big_vision's ViT has the tanh GELU, epsilon 1e-6, no pooled norm and no ResNet stem; "
                     "this model differs. Export it as vit_jax (or timm) instead.")
  if "cls" in flat and config.classifier != "token":
    raise ValueError(f"big_vision's ViT has a class token only to classify it; this model has one beside "
                     f"classifier={config.classifier!r}. Export it as vit_jax or timm instead.")
  flat = dict(flat)
  if common.POSEMB in flat:
    posemb = flat.pop(common.POSEMB)
    if "cls" in flat:
      flat["cls"] = flat["cls"] + posemb[:, :1]
      posemb = posemb[:, 1:]
    flat["pos_embedding"] = posemb
  file = path if path.suffix == ".npz" else path / "model.npz"
  file.parent.mkdir(parents=True, exist_ok=True)
  with file.open("wb") as f:
    np.savez(f, **{"params/" + k: v for k, v in sorted(_stack_linen(flat).items())})
  return file


def _stack_linen(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-block official names -> big_vision's scanned `Transformer/encoderblock` with Linen numbering."""
  out, layers = {}, {}
  for key, value in flat.items():
    match = re.match(r"Transformer/encoderblock_(\d+)/([^/]+)/(.*)$", key)
    if match:
      rest = f"{_BIG_VISION_NAMES.get(match.group(2), match.group(2))}/{match.group(3)}"
      layers.setdefault(rest, {})[int(match.group(1))] = value
    else:
      out[key] = value
  for rest, by_layer in layers.items():
    out["Transformer/encoderblock/" + rest] = np.stack([by_layer[i] for i in sorted(by_layer)])
  return out


def load_vit_jax(path: epath.Path, num_heads: int | None):
  """(official flat params, the model config beside the file if any, {})."""
  del num_heads  # explicit in the kernels' shapes
  file = common.find_file(path, ("model.npz",), "*.npz", "vit_jax checkpoint")
  info = common.json_file(file.parent / "config.json")
  base = info if _is_model_config(info) else common.embedded_config(info.get(common.CONFIG_KEY))
  return checkpoint.load_npz(file), base, {}


def save_vit_jax(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  """The official `.npz` (a folder gets `model.npz`) and our model config as `config.json` beside it."""
  file = path if path.suffix == ".npz" else path / "model.npz"
  config_file = file.parent / "config.json"
  existing = common.json_file(config_file)
  if existing and not _is_model_config(existing):
    raise ValueError(f"{config_file} exists and is not a vit_jax model config; write to another folder.")
  checkpoint.save_npz(file, checkpoint.params_from_flat(flat))
  config_file.write_text(config.to_json(indent=2))
  return file


def _is_model_config(info: dict) -> bool:
  return "hidden_size" in info and "transformer" in info
