"""What every format's converter shares: the tensor ledger, file reading, position-embedding rows."""

import json
import math
import os
import re
from typing import Any

from etils import epath
import numpy as np
import safetensors

CONFIG_KEY = "vit_jax_model_config"  # our model config (JSON) inside exported safetensors / config.json
POSEMB = "Transformer/posembed_input/pos_embedding"
# Name fragments of tensors from ViT relatives that vit_jax's ViT does not have -> what they are.
UNSUPPORTED = {"reg_token": "register tokens", ".ls1.": "layer scale", ".ls2.": "layer scale",
               "q_norm": "q/k normalisation", "norm_pre": "a norm before the blocks (pre_norm)",
               "mask_token": "a mask token", "dist_token": "a distillation token",
               "backbone": "a hybrid stem",
               "q_bias": "BEiT/EVA-style attention biases", "rel_pos": "relative position biases"}


class Tensors:
  """Named tensors, each taken exactly once; `finish` raises on any left over."""

  def __init__(self, tensors: dict[str, np.ndarray], source: str):
    self._left, self.source = dict(tensors), source

  def __contains__(self, name: str) -> bool:
    return name in self._left

  def names(self) -> list[str]:
    return sorted(self._left)

  def take(self, name: str) -> np.ndarray:
    if name not in self._left:
      raise ValueError(f"{self.source}: tensor {name!r} is missing.")
    return self._left.pop(name)

  def take_optional(self, name: str) -> np.ndarray | None:
    return self._left.pop(name, None)

  def finish(self) -> None:
    if not self._left:
      return
    notes = sorted({what for name in self._left for key, what in UNSUPPORTED.items() if key in name})
    hint = f" They look like {', '.join(notes)}, which vit_jax's ViT does not have." if notes else ""
    raise ValueError(f"{self.source}: unrecognised tensors {self.names()[:12]}"
                     f"{' ...' if len(self._left) > 12 else ''}.{hint} Is this a plain ViT checkpoint "
                     "of the format you named?")


def find_file(path: epath.Path, names: tuple[str, ...], pattern: str, what: str) -> epath.Path:
  """`path` itself, or in a folder the first of `names` present, else its one file matching `pattern`."""
  if not path.is_dir():
    return path
  for name in names:
    if (path / name).exists():
      return path / name
  found = sorted(path.glob(pattern))
  if len(found) != 1:
    raise FileNotFoundError(f"Looking for a {what} in {path}: {len(found)} files match {pattern} "
                            f"({[f.name for f in found][:5]}); pass the file itself.")
  return found[0]


def read_safetensors(file: epath.Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(tensors, metadata); float16 tensors come back as float32."""
  try:
    with safetensors.safe_open(os.fspath(file), framework="numpy") as f:
      tensors = {name: f.get_tensor(name) for name in f.keys()}
      metadata = f.metadata() or {}
  except Exception as e:  # safetensors raises its own error types, e.g. for bf16 (no numpy dtype)
    raise ValueError(f"Cannot read {file} as safetensors with NumPy: {e}. (bfloat16 files: convert them "
                     "to float32 first.)") from e
  return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in tensors.items()}, metadata


def json_file(file: epath.Path) -> dict:
  """The JSON object in `file`, or {} when there is no such file."""
  if not file.exists():
    return {}
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON: {e}") from e


def embedded_config(value: str | dict | None) -> dict | None:
  """Our model config as stored under CONFIG_KEY (JSON text in safetensors metadata, a dict in JSON)."""
  return json.loads(value) if isinstance(value, str) else value


def num_patches(img_size: Any, patch_size: Any) -> int | None:
  if img_size is None or patch_size is None:
    return None
  img = (img_size,) * 2 if isinstance(img_size, int) else tuple(img_size)
  patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
  return (img[0] // patch[0]) * (img[1] // patch[1])


def with_class_row(posemb: np.ndarray, class_token: bool, patches: int | None, source: str) -> np.ndarray:
  """Adds a zero class-token row to a position embedding of the patches only (big_vision, timm
  `no_embed_class`): the class token then gets no position embedding, as in those models."""
  rows = posemb.shape[1]
  if not class_token:
    return posemb
  if patches is not None:
    patches_only = rows == patches
  elif math.isqrt(rows - 1)**2 == rows - 1 or math.isqrt(rows)**2 == rows:
    patches_only = math.isqrt(rows)**2 == rows
  else:
    raise ValueError(f"{source}: cannot tell whether the position embedding {posemb.shape} has a class-token "
                     "row (its grid is not square); give the image size in a config.json beside it.")
  return np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1) if patches_only else posemb


def block_indices(names: list[str], pattern: str, source: str) -> list[int]:
  """The block numbers that `pattern` (group 1) finds in `names`; they must run 0..n-1."""
  indices = sorted({int(m.group(1)) for n in names if (m := re.match(pattern, n))})
  if indices != list(range(len(indices))):
    raise ValueError(f"{source}: block numbers {indices} are not 0..{len(indices) - 1}.")
  return indices


def grid_tokens(state: dict[str, np.ndarray]) -> int:
  """Patch tokens of a timm state dict's position embedding, which exports need to be a square grid."""
  tokens = state["pos_embed"].shape[1] - ("cls_token" in state) - ("dist_token" in state)
  if math.isqrt(tokens)**2 != tokens:
    raise ValueError(f"Exports need a square patch grid; the position embedding has {tokens} patch tokens.")
  return tokens
