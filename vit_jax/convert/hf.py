"""Hugging Face `ViTModel` / `ViTForImageClassification` folders (as `save_pretrained` writes them).

HF names are a renaming of timm's (q, k, v concatenated give timm's `qkv`; the pooler is a pre-logits
layer), so both directions go through `vit_jax.convert.timm`.
"""

import json
import math
import os
import re

from absl import logging
from etils import epath
import ml_collections
import numpy as np
import safetensors.numpy

from vit_jax.convert import common
from vit_jax.convert import timm

# Block tensors -> timm, classic names first, then the transformers-5 module names.
_BLOCK = {"norm1": ("layernorm_before", "layernorm_before"),
          "norm2": ("layernorm_after", "layernorm_after"),
          "q": ("attention.attention.query", "attention.q_proj"),
          "k": ("attention.attention.key", "attention.k_proj"),
          "v": ("attention.attention.value", "attention.v_proj"),
          "attn.proj": ("attention.output.dense", "attention.o_proj"),
          "mlp.fc1": ("intermediate.dense", "mlp.fc1"), "mlp.fc2": ("output.dense", "mlp.fc2")}
_TOP = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm",
        "pre_logits": "pooler.dense"}
_GELU = {"gelu": False, "gelu_python": False, "gelu_new": True, "gelu_pytorch_tanh": True,
         "gelu_fast": True}  # hidden_act -> gelu_approximate


def load(path: epath.Path, num_heads: int | None):
  """(official flat params, our embedded config or None, config fields the HF files declare)."""
  folder = path if path.is_dir() else path.parent
  info = common.json_file(folder / "config.json")
  if not info:
    raise FileNotFoundError(f"No config.json in {folder}: point at the folder that save_pretrained wrote.")
  if info.get("model_type", "vit") != "vit":
    raise ValueError(f"{folder}/config.json has model_type {info['model_type']!r}; only 'vit' is supported.")
  if path.is_dir():
    tensors = _read_weights(folder)
  else:
    tensors, _ = common.read_safetensors(path)
  heads = int(info["num_attention_heads"])
  if num_heads is not None and num_heads != heads:
    raise ValueError(f"num_heads={num_heads} but {folder}/config.json says {heads}.")
  act = info.get("hidden_act", "gelu")
  if act not in _GELU:
    raise ValueError(f"{folder}/config.json: hidden_act {act!r} is not supported; vit_jax has "
                     f"{sorted(_GELU)}.")
  if info.get("pooler_act", "tanh") != "tanh":
    raise ValueError(f"{folder}/config.json: pooler_act {info['pooler_act']!r}; only tanh is supported.")
  source = f"Hugging Face checkpoint {folder}"
  state = _timm_state(common.Tensors(tensors, source))
  pooling = timm.pooling(state, "token", source)
  num_patches = common.num_patches(info.get("image_size"), info.get("patch_size", 16))
  flat = timm.flat_from_timm(common.Tensors(state, source), heads, num_patches=num_patches)
  mean, std = _normalisation(folder / "preprocessor_config.json")
  base = common.embedded_config(info.get(common.CONFIG_KEY))
  fields = dict(gelu_approximate=_GELU[act], layer_norm_epsilon=float(info.get("layer_norm_eps", 1e-12)),
                pixel_mean=mean, pixel_std=std,
                dropout_rate=float(info.get("hidden_dropout_prob", 0.)),
                attention_dropout_rate=float(info.get("attention_probs_dropout_prob", 0.)), **pooling)
  return flat, base, fields


def _read_weights(folder: epath.Path) -> dict[str, np.ndarray]:
  index = common.json_file(folder / "model.safetensors.index.json")
  if index:
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
      tensors.update(common.read_safetensors(folder / shard)[0])
    return tensors
  file = folder / "model.safetensors"
  if not file.exists():
    raise FileNotFoundError(f"No model.safetensors in {folder} (PyTorch .bin files are not read: they are "
                            "pickles). Re-save the model with save_pretrained(safe_serialization=True).")
  return common.read_safetensors(file)[0]


def _timm_state(tensors: common.Tensors) -> dict[str, np.ndarray]:
  """HF names -> timm names; q, k, v are concatenated into timm's fused qkv (the HF pooler -> pre_logits)."""
  prefix = "vit." if any(n.startswith("vit.") for n in tensors.names()) else ""
  state = {}

  def move(hf_name: str, timm_name: str) -> None:
    for suffix in ("", ".weight", ".bias"):
      if hf_name + suffix in tensors:
        state[timm_name + suffix] = tensors.take(hf_name + suffix)

  classic = common.block_indices(tensors.names(), re.escape(prefix) + r"encoder\.layer\.(\d+)\.",
                                 tensors.source)
  layers = classic or common.block_indices(tensors.names(), re.escape(prefix) + r"layers\.(\d+)\.",
                                           tensors.source)
  for i in layers:
    hf_block = f"{prefix}encoder.layer.{i}." if classic else f"{prefix}layers.{i}."
    for timm_name, names in _BLOCK.items():
      move(hf_block + names[0 if classic else 1], f"blocks.{i}.{timm_name}")
    for kind in ("weight", "bias"):
      parts = [state.pop(f"blocks.{i}.{x}.{kind}", None) for x in "qkv"]
      if all(p is not None for p in parts):
        state[f"blocks.{i}.attn.qkv.{kind}"] = np.concatenate(parts)
      elif any(p is not None for p in parts):
        raise ValueError(f"{tensors.source}: layer {i} has some but not all of the q/k/v {kind}s.")
  for timm_name, hf_name in _TOP.items():
    move(prefix + hf_name, timm_name)
  if "classifier.weight" in tensors:
    move("classifier", "head")
    if "pre_logits.weight" in state:
      logging.info("%s: ignoring the pooler, which ViTForImageClassification does not use.", tensors.source)
      del state["pre_logits.weight"], state["pre_logits.bias"]
  tensors.finish()
  return state


def _normalisation(file: epath.Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) of [0, 1] pixels that the ViTImageProcessor in `file` applies (0.5, 0.5 when absent)."""
  info = common.json_file(file)
  if not info.get("do_normalize", True):
    mean, std = [0.] * 3, [1.] * 3
  else:
    mean, std = info.get("image_mean", [0.5] * 3), info.get("image_std", [0.5] * 3)
  scale = 255. * info.get("rescale_factor", 1 / 255) if info.get("do_rescale", True) else 255.
  if abs(scale - 1.) > 1e-9:  # the processor normalises pixels in [0, scale], not [0, 1]
    mean, std = [m / scale for m in mean], [s / scale for s in std]
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def save(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  """A folder as `save_pretrained` writes it: ViTForImageClassification, or ViTModel with its pooler when
  the model has no head."""
  if config.classifier != "token" or config.pooled_norm:
    raise ValueError(f"Hugging Face ViT classifies the CLS token after a final norm on all tokens; this "
                     f"model has classifier={config.classifier!r}, pooled_norm={config.pooled_norm}. "
                     "Export it to timm instead.")
  if config.representation_size is not None and config.num_classes:
    raise ValueError("ViTForImageClassification has no pre-logits layer before its classifier; this model "
                     "has representation_size set (export with num_classes=0 to get a ViTModel with pooler).")
  state = timm.timm_from_flat(flat, config)
  classify = bool(config.num_classes)
  prefix = "vit." if classify else ""
  hf = {}
  rename = {t: prefix + h for t, h in _TOP.items()} | {"head": "classifier"}
  for name, value in state.items():
    match = re.match(r"blocks\.(\d+)\.(.*)\.(weight|bias)$", name)
    if match and match.group(2) == "attn.qkv":
      block = f"{prefix}encoder.layer.{match.group(1)}.attention.attention."
      for part, x in zip(("query", "key", "value"), np.split(value, 3)):
        hf[f"{block}{part}.{match.group(3)}"] = x
    elif match:
      hf[f"{prefix}encoder.layer.{match.group(1)}.{_BLOCK[match.group(2)][0]}.{match.group(3)}"] = value
    else:
      stem, _, kind = name.rpartition(".") if name.endswith((".weight", ".bias")) else (name, "", "")
      hf[rename[stem] + ("." + kind if kind else "")] = value
  path.mkdir(parents=True, exist_ok=True)
  size = int(math.isqrt(common.grid_tokens(state))) * config.patches.size[0]
  if tuple(config.patches.size) != (config.patches.size[0],) * 2:
    raise ValueError(f"Hugging Face ViT needs square patches, not {tuple(config.patches.size)}.")
  info = dict(
      architectures=["ViTForImageClassification" if classify else "ViTModel"], model_type="vit",
      hidden_size=config.hidden_size, num_hidden_layers=config.transformer.num_layers,
      num_attention_heads=config.transformer.num_heads, intermediate_size=config.transformer.mlp_dim,
      hidden_act="gelu_new" if config.gelu_approximate else "gelu",
      hidden_dropout_prob=config.transformer.dropout_rate,
      attention_probs_dropout_prob=config.transformer.attention_dropout_rate, initializer_range=0.02,
      layer_norm_eps=config.layer_norm_epsilon, image_size=size, patch_size=config.patches.size[0],
      num_channels=int(state["patch_embed.proj.weight"].shape[1]), qkv_bias=True,
      encoder_stride=config.patches.size[0], pooler_act="tanh",
      pooler_output_size=config.representation_size or config.hidden_size,
      id2label={str(i): f"LABEL_{i}" for i in range(config.num_classes)},
      label2id={f"LABEL_{i}": i for i in range(config.num_classes)}, **{common.CONFIG_KEY: config.to_dict()})
  (path / "config.json").write_text(json.dumps(info, indent=2))
  processor = dict(do_normalize=True, do_rescale=True, do_resize=True, image_mean=list(config.pixel_mean),
                   image_std=list(config.pixel_std), image_processor_type="ViTImageProcessor", resample=2,
                   rescale_factor=1 / 255, size={"height": size, "width": size})
  (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
  safetensors.numpy.save_file(hf, os.fspath(path / "model.safetensors"), metadata={"format": "pt"})
  return path / "model.safetensors"
