"""The official flat `.npz` checkpoint format: read, write, and adapt to a new model.

A checkpoint is a flat dict of '/'-joined parameter paths (`Transformer/encoderblock_0/MlpBlock_3/Dense_0/
kernel`) to arrays, exactly as the published ViT and AugReg files store them. Local paths and `gs://`
alike go through `etils.epath`; files are read with `allow_pickle=False`, never unpickled.
"""

import io
import re
import zipfile
import zlib
from typing import Any

from absl import logging
from etils import epath
import flax
import ml_collections
import numpy as np
import scipy.ndimage

Params = dict[str, Any]

_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/(.*)$")
_SCANNED_BLOCK = "Transformer/encoderblock/"
# Linen numbers sibling modules per type; the published (pre-Linen) files share one counter per block.
_LINEN_TO_PRE_LINEN = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_0":
                       "MultiHeadDotProductAttention_1", "LayerNorm_1": "LayerNorm_2",
                       "MlpBlock_0": "MlpBlock_3"}
_GROUP_NORM = re.compile(r"(^|/)gn(\d+|_root|_proj)/(scale|bias)$")


def load_npz(path: str | epath.Path) -> dict[str, np.ndarray]:
  """Reads a flat checkpoint; keys of the form `__name__` (test data, configs) are left out."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"No checkpoint at {path}.")
  data = path.read_bytes()
  if not data.startswith(b"PK"):
    raise ValueError(f"{path} is not a readable .npz checkpoint (not a zip archive).")
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files if not (k.startswith("__") and k.endswith("__"))}
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise ValueError(
          f"{path} holds pickled Python objects; vit_jax never unpickles checkpoints, since loading a "
          "pickle can run arbitrary code. Re-save it as plain arrays (np.savez(path, **flat_params)).") from e
    raise ValueError(f"{path} is not a readable .npz checkpoint: {e}") from e
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, NotImplementedError) as e:
    # A truncated or bit-flipped archive: the zip directory, a CRC or a member's array header is broken.
    raise ValueError(f"{path} is a damaged .npz checkpoint ({type(e).__name__}: {e}); download or copy "
                     "it again.") from e


def save_npz(path: str | epath.Path, params: Params) -> None:
  """Writes `params` in the published layout (per-block names, also for a scanned model)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  flat = flat_from_params(params)
  np.savez(buffer, **{k: flat[k] for k in sorted(flat)})
  path.write_bytes(buffer.getvalue())


def flat_from_params(params: Params) -> dict[str, np.ndarray]:
  """Nested params -> flat official names; a scanned encoder is split into `encoderblock_{i}`."""
  flat = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params).items()}
  out = {}
  for key, value in flat.items():
    if key.startswith(_SCANNED_BLOCK):
      rest = key[len(_SCANNED_BLOCK):]
      for i, layer_value in enumerate(value):
        out[f"Transformer/encoderblock_{i}/{rest}"] = layer_value
    else:
      out[key] = value
  return out


def params_from_flat(flat: dict[str, np.ndarray], *, scan: bool = False) -> Params:
  """Flat official names -> the nested params of our model (stacked blocks when `scan`).

  Accepts both block numberings (pre-Linen `MultiHeadDotProductAttention_1`, Linen `..._0`), a stacked
  `encoderblock` from a scanned model, and GroupNorm scale/bias stored as (1, 1, 1, C).
  """
  linen = any("/MultiHeadDotProductAttention_0/" in k for k in flat if "encoderblock" in k)
  per_block = {}
  for key, value in flat.items():
    value = np.asarray(value)
    if _GROUP_NORM.search(key):
      value = value.reshape(-1)
    if key.startswith(_SCANNED_BLOCK):
      for i, layer_value in enumerate(value):
        per_block[f"Transformer/encoderblock_{i}/{key[len(_SCANNED_BLOCK):]}"] = layer_value
    else:
      per_block[key] = value
  if linen:
    per_block = {_renumber_block_key(k): v for k, v in per_block.items()}
  if scan:
    per_block = _stack_blocks(per_block)
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in per_block.items()})


def _renumber_block_key(key: str) -> str:
  match = _BLOCK.match(key)
  if not match:
    return key
  module, _, rest = match.group(2).partition("/")
  return f"Transformer/encoderblock_{match.group(1)}/{_LINEN_TO_PRE_LINEN.get(module, module)}/{rest}"


def _stack_blocks(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  layers: dict[str, dict[int, np.ndarray]] = {}
  out = {}
  for key, value in flat.items():
    match = _BLOCK.match(key)
    if match:
      layers.setdefault(match.group(2), {})[int(match.group(1))] = value
    else:
      out[key] = value
  for rest, by_layer in layers.items():
    out[_SCANNED_BLOCK + rest] = np.stack([by_layer[i] for i in sorted(by_layer)])
  return out


def resize_posemb(posemb: np.ndarray, num_tokens: int, num_prefix_tokens: int) -> np.ndarray:
  """Resizes a [1, prefix + h*w, D] position embedding to `num_tokens` as the official code does.

  The class-token row is kept apart and the square grid is zoomed bilinearly with aligned corners
  (`scipy.ndimage.zoom(order=1)`); same grid in, same array out.
  """
  if posemb.shape[1] == num_tokens:
    return posemb
  old_prefix = _prefix_tokens(posemb.shape[1], f"the checkpoint's position embedding {posemb.shape}")
  tokens, grid = posemb[:, :old_prefix], posemb[0, old_prefix:]
  if num_prefix_tokens > old_prefix:
    raise ValueError(f"The model needs {num_prefix_tokens} class-token position(s) but the checkpoint's "
                     f"position embedding {posemb.shape} has {old_prefix}.")
  tokens = tokens[:, :num_prefix_tokens]
  new_grid_tokens = num_tokens - num_prefix_tokens
  old_size, new_size = int(np.sqrt(len(grid))), int(np.sqrt(new_grid_tokens))
  if new_size * new_size != new_grid_tokens:
    raise ValueError(f"Cannot resize the position embedding to {new_grid_tokens} grid tokens: "
                     "not a square grid.")
  logging.info("Resizing position embedding grid %dx%d -> %dx%d", old_size, old_size, new_size, new_size)
  grid = grid.reshape(old_size, old_size, -1)
  zoom = (new_size / old_size, new_size / old_size, 1)
  grid = scipy.ndimage.zoom(grid, zoom, order=1).reshape(1, new_size * new_size, -1)
  return np.concatenate([tokens, grid], axis=1).astype(posemb.dtype)


def _prefix_tokens(num_tokens: int, what: str) -> int:
  """1 if `num_tokens` is a square grid plus a class token, 0 if a square grid."""
  for prefix in (0, 1):
    if int(np.sqrt(num_tokens - prefix))**2 == num_tokens - prefix:
      return prefix
  raise ValueError(f"Cannot tell the grid of {what}: {num_tokens} tokens is neither a square grid "
                   "nor a square grid plus a class token.")


def adapt(restored: Params, init_params: Params, model_config: ml_collections.ConfigDict, *,
          keep_head: bool = False) -> Params:
  """Fits loaded params to a new task (fine-tuning): new grid, a new head, no pre-logits the model lacks.

  The head always starts anew (kernel zero, bias `head_bias_init`), as the paper, vision_transformer
  and big_vision start every transfer, also when the class count is the same; `keep_head` keeps the
  checkpoint's head instead (its shapes must then match). Everything else must match (see `fit`).
  """
  restored = flax.traverse_util.flatten_dict(restored, sep="/")
  init = flax.traverse_util.flatten_dict(init_params, sep="/")
  for key in ("head/kernel", "head/bias", "head_dist/kernel", "head_dist/bias"):
    if key not in init:
      continue
    source = restored.get(key)
    if keep_head and (source is None or source.shape != init[key].shape):
      raise ValueError(f"keep_head: the checkpoint's {key} {getattr(source, 'shape', '(absent)')} does not "
                       f"fit the model's {init[key].shape}; set init_keep_head = False for a new zero head.")
    if not keep_head:
      logging.info("New head %s %s (the checkpoint's: %s)", key, init[key].shape, getattr(source, "shape", None))
      value = model_config.get("head_bias_init", 0.) if key.endswith("/bias") else 0.
      restored[key] = np.full(init[key].shape, value, init[key].dtype)
  for key in list(restored):
    if key.split("/")[0] in ("head", "head_dist", "pre_logits") and key not in init:
      logging.info("Dropping %s: the model has no such layer.", key)
      del restored[key]
  return fit(flax.traverse_util.unflatten_dict(restored, sep="/"), init_params, model_config)


def fit(restored: Params, init_params: Params, model_config: ml_collections.ConfigDict) -> Params:
  """Loaded params exactly as they are (for inference), the position embedding resized to the model's grid.

  Any other difference, a missing or mismatched head included, raises naming the parameters and shapes:
  a checkpoint's trained weights are never silently replaced.
  """
  restored = flax.traverse_util.flatten_dict(restored, sep="/")
  init = flax.traverse_util.flatten_dict(init_params, sep="/")
  posemb_key = "Transformer/posembed_input/pos_embedding"
  if posemb_key in restored and posemb_key in init:
    prefix = (2 if model_config.get("distilled") else 1) if model_config.classifier == "token" else 0
    restored[posemb_key] = resize_posemb(restored[posemb_key], init[posemb_key].shape[1], prefix)
  _check_same_layout(restored, init)
  return flax.traverse_util.unflatten_dict(restored, sep="/")


def _check_same_layout(restored: dict[str, Any], init: dict[str, Any]) -> None:
  missing = sorted(set(init) - set(restored))
  unexpected = sorted(set(restored) - set(init))
  mismatched = [key for key in sorted(set(init) & set(restored))
                if tuple(restored[key].shape) != tuple(init[key].shape)]
  problems = []
  if missing:
    problems.append(f"missing from the checkpoint: {missing}")
  if unexpected:
    problems.append(f"in the checkpoint but not in the model: {unexpected}")
  for key in mismatched:
    problems.append(f"{key}: checkpoint shape {tuple(restored[key].shape)} != model shape "
                    f"{tuple(init[key].shape)}")
  if not problems:
    return
  if all(key.startswith(("head/", "head_dist/")) for key in missing + unexpected + mismatched):
    problems.append("a checkpoint's head is used as it is for inference; to fine-tune on other classes, "
                    "start a run from it (config.init_checkpoint), which gives a new head")
  raise ValueError("The checkpoint does not fit the model (check the model name, classifier, "
                   "representation_size and patch size):\n  " + "\n  ".join(problems))


def load_pretrained(path: str | epath.Path, init_params: Params, model_config: ml_collections.ConfigDict,
                    *, transfer: bool = False, keep_head: bool = False) -> Params:
  """Reads an official `.npz` for the model that `init_params` belongs to.

  For inference (default) the checkpoint must fit exactly (`fit`); with `transfer` it starts a
  fine-tuning run (`adapt`: a new zero head unless `keep_head`).
  """
  restored = params_from_flat(load_npz(path), scan=bool(model_config.get("scan", False)))
  if transfer:
    return adapt(restored, init_params, model_config, keep_head=keep_head)
  return fit(restored, init_params, model_config)
