"""Brings ViT weights in from timm, Hugging Face and big_vision checkpoints, and hands them back.

    config, params = convert.load("vit_small.safetensors", "timm", num_heads=6)
    logits = models.create(config).apply({"params": params}, images)   # images NHWC in [-1, 1]
    convert.save(params, config, "out/hf_model", "hf")

    python -m vit_jax.convert --from=timm --to=vit_jax vit_small.safetensors out/
    python -m vit_jax.convert --from=vit_jax --to=hf out/ out/hf_model

Every format passes through the official flat layout of `vit_jax.checkpoint` ('/'-joined names,
`Transformer/encoderblock_{i}/...`). timm tensors are PyTorch layouts (Linear (out, in), Conv OIHW, q/k/v
fused head-major); Hugging Face names are a renaming of timm's (q, k, v concatenated give timm's `qkv`).
Each source tensor is consumed exactly once and a name we do not recognise is an error, never skipped.

Shapes give the architecture except the number of heads; for timm pass `num_heads` or keep a
`config.json` (timm hub `model_args`, or a top-level `num_heads`) beside the weights. The returned config
also records what the shapes cannot say -- exact or tanh GELU, layer-norm epsilon, the input normalisation
the weights expect, where the final norm sits -- so the model predicts what the source model did. Exports
embed the vit_jax model config (safetensors metadata or config.json), so a round trip is exact.
"""

import argparse
import json
import math
import os
import re
import sys
from typing import Any

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors
import safetensors.numpy

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import models

FORMATS = ("timm", "hf", "big_vision", "vit_jax")
CONFIG_KEY = "vit_jax_model_config"  # our model config (JSON) inside exported safetensors / config.json
_POSEMB = "Transformer/posembed_input/pos_embedding"
_TIMM_BLOCK = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2", "mlp.fc1": "MlpBlock_3/Dense_0",
               "mlp.fc2": "MlpBlock_3/Dense_1", "attn.proj": "MultiHeadDotProductAttention_1/out"}
_TIMM_MAP = {"attn_pool.proj": "MAPHead_0/MultiHeadDotProductAttention_0/out", "attn_pool.norm":
             "MAPHead_0/LayerNorm_0", "attn_pool.mlp.fc1": "MAPHead_0/MlpBlock_0/Dense_0",
             "attn_pool.mlp.fc2": "MAPHead_0/MlpBlock_0/Dense_1"}
# Hugging Face ViT block tensors -> timm, classic names first, then the transformers-5 module names.
_HF_BLOCK = {"norm1": ("layernorm_before", "layernorm_before"),
             "norm2": ("layernorm_after", "layernorm_after"),
             "q": ("attention.attention.query", "attention.q_proj"),
             "k": ("attention.attention.key", "attention.k_proj"),
             "v": ("attention.attention.value", "attention.v_proj"),
             "attn.proj": ("attention.output.dense", "attention.o_proj"),
             "mlp.fc1": ("intermediate.dense", "mlp.fc1"), "mlp.fc2": ("output.dense", "mlp.fc2")}
_HF_TOP = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm",
           "pre_logits": "pooler.dense"}
_HF_GELU = {"gelu": False, "gelu_python": False, "gelu_new": True, "gelu_pytorch_tanh": True,
            "gelu_fast": True}  # hidden_act -> gelu_approximate
_UNSUPPORTED = {"reg_token": "register tokens", ".ls1.": "layer scale", ".ls2.": "layer scale",
                "q_norm": "q/k normalisation", "norm_pre": "a norm before the blocks (pre_norm)",
                "mask_token": "a mask token", "dist_token": "a distillation token",
                "backbone": "a hybrid stem",
                "q_bias": "BEiT/EVA-style attention biases", "rel_pos": "relative position biases"}


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
  config = _model_config(params, base, fields, model_name=f"{source_format}:{path.name}")
  if num_heads is not None and num_heads != config.transformer.num_heads:
    raise ValueError(f"num_heads={num_heads} but the checkpoint at {path} has "
                     f"{config.transformer.num_heads} heads.")
  _apply_overrides(config, overrides)
  _check_fits(config, params, str(path))
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


class _Tensors:
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
    notes = sorted({what for name in self._left for key, what in _UNSUPPORTED.items() if key in name})
    hint = f" They look like {', '.join(notes)}, which vit_jax's ViT does not have." if notes else ""
    raise ValueError(f"{self.source}: unrecognised tensors {self.names()[:12]}"
                     f"{' ...' if len(self._left) > 12 else ''}.{hint} Is this a plain ViT checkpoint "
                     "of the format you named?")


# ---- timm ------------------------------------------------------------------------------------------


def _load_timm(path: epath.Path, num_heads: int | None):
  file = _find_file(path, ("model.safetensors",), "*.safetensors", "timm state dict")
  tensors, metadata = _read_safetensors(file)
  if "patch_embed.proj.weight" not in tensors:
    raise ValueError(f"{file} is not a timm ViT state dict: it has no patch_embed.proj.weight (its names: "
                     f"{sorted(tensors)[:4]} ...). A Hugging Face folder loads with source format 'hf'.")
  info = _json_file(file.parent / "config.json")
  base = _embedded_config(metadata.get(CONFIG_KEY)) or _embedded_config(info.get(CONFIG_KEY))
  args = info.get("model_args", {})
  pretrained = info.get("pretrained_cfg", {})
  base = base or {}
  num_heads = (num_heads or args.get("num_heads") or info.get("num_heads")
               or base.get("transformer", {}).get("num_heads")
               or _heads_from_timm_name(info.get("architecture"), tensors))
  if not num_heads:
    raise ValueError(f"{file}: a timm state dict does not say how many attention heads it has. Pass "
                     "num_heads=... (CLI: --num_heads) or put the timm hub config.json beside it.")
  act = args.get("act_layer")
  if act not in (None, "gelu", "gelu_tanh"):
    raise ValueError(f"{file}: act_layer={act!r} is not supported; vit_jax has the exact and tanh GELU.")
  gelu_approximate = act == "gelu_tanh" if act else base.get("gelu_approximate", False)
  mean = pretrained.get("mean") or info.get("mean") or info.get("norm_mean") or base.get("pixel_mean")
  std = pretrained.get("std") or info.get("std") or info.get("norm_std") or base.get("pixel_std")
  if mean is None or std is None:
    logging.warning("%s declares no input normalisation; assuming mean = std = 0.5 (timm's augreg ViTs). "
                    "Pass pixel_mean=/pixel_std= if the model was trained with ImageNet mean/std.", file)
    mean, std = (0.5,) * 3, (0.5,) * 3
  global_pool = args.get("global_pool", info.get("global_pool"))
  if global_pool is None and "classifier" in base:
    global_pool = {"token": "token", "gap": "avg", "map": "map"}[base["classifier"]]
  img_size = args.get("img_size", info.get("img_size"))
  flat = _flat_from_timm(_Tensors(tensors, f"timm state dict {file}"), int(num_heads),
                         num_patches=_num_patches(img_size, tensors["patch_embed.proj.weight"].shape[2:]),
                         global_pool=global_pool)
  epsilon = info.get("layer_norm_eps", base.get("layer_norm_epsilon", 1e-6))
  fields = dict(gelu_approximate=bool(gelu_approximate), pixel_mean=tuple(mean), pixel_std=tuple(std),
                layer_norm_epsilon=float(epsilon))
  return flat, base, fields


def _flat_from_timm(tensors: _Tensors, num_heads: int, *, num_patches: int | None,
                    global_pool: str | None) -> dict[str, np.ndarray]:
  """timm state dict (plus `pre_logits.*`, the HF pooler) -> official flat names."""
  flat = {}
  weight = tensors.take("patch_embed.proj.weight")
  flat["embedding/kernel"] = weight.transpose(2, 3, 1, 0)
  bias = tensors.take_optional("patch_embed.proj.bias")
  flat["embedding/bias"] = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias
  hidden = weight.shape[0]
  if hidden % num_heads:
    raise ValueError(f"{tensors.source}: width {hidden} is not divisible by num_heads={num_heads}.")
  cls = tensors.take_optional("cls_token")
  if cls is not None:
    flat["cls"] = cls
  posemb = tensors.take_optional("pos_embed")
  if posemb is not None:
    flat[_POSEMB] = _with_class_row(posemb, cls is not None, num_patches, tensors.source)
  _check_pooling(tensors, cls is not None, global_pool)

  def attention(torch_prefix: str, projections: dict[str, tuple[str, ...]], name: str) -> None:
    """Fused head-major torch projections (rows: part, head, head_dim) -> Flax (in, heads, head_dim)."""
    for torch_name, parts in projections.items():
      weight = tensors.take(f"{torch_prefix}{torch_name}.weight")
      bias = tensors.take_optional(f"{torch_prefix}{torch_name}.bias")
      bias = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias
      for part, w, b in zip(parts, np.split(weight, len(parts)), np.split(bias, len(parts))):
        flat[f"{name}/{part}/kernel"] = w.T.reshape(hidden, num_heads, -1)
        flat[f"{name}/{part}/bias"] = b.reshape(num_heads, -1)
    flat[f"{name}/out/kernel"] = flat[f"{name}/out/kernel"].reshape(num_heads, -1, hidden)

  for i in _block_indices(tensors.names(), r"blocks\.(\d+)\.", tensors.source):
    for timm_name, name in _TIMM_BLOCK.items():
      _take_linear_or_norm(tensors, f"blocks.{i}.{timm_name}", f"Transformer/encoderblock_{i}/{name}", flat)
    attention(f"blocks.{i}.attn.", {"qkv": ("query", "key", "value")},
              f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1")
  if "attn_pool.latent" in tensors:
    flat["MAPHead_0/probe"] = tensors.take("attn_pool.latent")
    if flat["MAPHead_0/probe"].shape[1] != 1:
      raise ValueError(f"{tensors.source}: attn_pool has several latents; vit_jax's MAP head has one.")
    for timm_name, name in _TIMM_MAP.items():
      _take_linear_or_norm(tensors, timm_name, name, flat)
    attention("attn_pool.", {"q": ("query",), "kv": ("key", "value")},
              "MAPHead_0/MultiHeadDotProductAttention_0")
  for timm_name, name in (("norm", "Transformer/encoder_norm"), ("fc_norm", "fc_norm"),
                          ("pre_logits", "pre_logits"), ("head", "head")):
    if timm_name + ".weight" in tensors:
      _take_linear_or_norm(tensors, timm_name, name, flat)
  if "Transformer/encoder_norm/scale" not in flat and "fc_norm/scale" not in flat:
    raise ValueError(f"{tensors.source} has neither norm.* nor fc_norm.*: a model without a final norm "
                     "is not supported.")
  tensors.finish()
  return flat


def _take_linear_or_norm(tensors: _Tensors, torch_name: str, name: str, flat: dict) -> None:
  weight = tensors.take(torch_name + ".weight")
  flat[name + ("/kernel" if weight.ndim == 2 else "/scale")] = weight.T if weight.ndim == 2 else weight
  bias = tensors.take_optional(torch_name + ".bias")
  flat[name + "/bias"] = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias


def _check_pooling(tensors: _Tensors, class_token: bool, global_pool: str | None) -> None:
  """Refuses the timm poolings vit_jax's model cannot compute (rather than load them as another model)."""
  if "attn_pool.latent" in tensors:
    if class_token:
      raise ValueError(f"{tensors.source}: MAP pooling over a class token as well is not supported.")
    return
  if global_pool not in (None, "token", "avg", ""):
    raise ValueError(f"{tensors.source}: global_pool={global_pool!r} is not supported (token, avg, map).")
  if class_token and (global_pool == "avg" or (global_pool is None and "fc_norm.weight" in tensors)):
    raise ValueError(
        f"{tensors.source}: average pooling over the patch tokens of a model with a class token (timm "
        "global_pool='avg', e.g. MAE) is not supported by vit_jax's ViT yet. If the model pools the class "
        "token, say so: a config.json beside it with \"global_pool\": \"token\".")
  if not class_token and global_pool == "token":
    raise ValueError(f"{tensors.source}: global_pool='token' but there is no cls_token.")


def _timm_from_flat(flat: dict[str, np.ndarray], config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Official flat names -> timm state dict (plus `pre_logits.*` when the model has that layer)."""
  flat = dict(flat)
  if config.resnet is not None:
    raise ValueError("Hybrid (ResNet + ViT) models have no timm/HF export here; save as vit_jax instead.")
  state = {}
  kernel = flat.pop("embedding/kernel")
  hidden = kernel.shape[-1]
  state["patch_embed.proj.weight"] = kernel.transpose(3, 2, 0, 1)
  state["patch_embed.proj.bias"] = flat.pop("embedding/bias")
  if "cls" in flat:
    state["cls_token"] = flat.pop("cls")
  if _POSEMB not in flat:
    raise ValueError("A model with posemb='sincos2d' stores no position embedding and its config has no "
                     "image size to compute one for; export it as vit_jax or big_vision.")
  state["pos_embed"] = flat.pop(_POSEMB)

  def linear(name: str, torch_name: str) -> None:
    kernel = flat.pop(name + "/kernel")
    state[torch_name + ".weight"] = kernel.reshape(-1, kernel.shape[-1]).T
    state[torch_name + ".bias"] = flat.pop(name + "/bias").reshape(-1)

  def norm(name: str, torch_name: str) -> None:
    state[torch_name + ".weight"] = flat.pop(name + "/scale")
    state[torch_name + ".bias"] = flat.pop(name + "/bias")

  def in_heads(name: str) -> tuple[np.ndarray, np.ndarray]:
    return flat.pop(name + "/kernel").reshape(hidden, hidden).T, flat.pop(name + "/bias").reshape(-1)

  for i in range(config.transformer.num_layers):
    block, prefix = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
    for timm_name, name in _TIMM_BLOCK.items():
      (norm if "LayerNorm" in name else linear)(block + name, prefix + timm_name)
    qkv = [in_heads(f"{block}MultiHeadDotProductAttention_1/{n}") for n in ("query", "key", "value")]
    state[prefix + "attn.qkv.weight"] = np.concatenate([w for w, _ in qkv])
    state[prefix + "attn.qkv.bias"] = np.concatenate([b for _, b in qkv])
  if config.classifier == "map":
    state["attn_pool.latent"] = flat.pop("MAPHead_0/probe")
    attention = "MAPHead_0/MultiHeadDotProductAttention_0/"
    state["attn_pool.q.weight"], state["attn_pool.q.bias"] = in_heads(attention + "query")
    kv = [in_heads(attention + n) for n in ("key", "value")]
    state["attn_pool.kv.weight"] = np.concatenate([w for w, _ in kv])
    state["attn_pool.kv.bias"] = np.concatenate([b for _, b in kv])
    for timm_name, name in _TIMM_MAP.items():
      (norm if "LayerNorm" in name else linear)(name, timm_name)
  for name, timm_name in (("Transformer/encoder_norm", "norm"), ("fc_norm", "fc_norm")):
    if name + "/scale" in flat:
      norm(name, timm_name)
  for name in ("pre_logits", "head"):
    if name + "/kernel" in flat:
      linear(name, name)
  if flat:
    raise ValueError(f"No timm/HF name for the parameters {sorted(flat)}.")
  return {k: np.ascontiguousarray(v) for k, v in state.items()}


def _save_timm(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  state = _timm_from_flat(flat, config)
  if "pre_logits.weight" in state:
    raise ValueError("timm's VisionTransformer has no pre-logits (representation) layer; this model has "
                     "representation_size set. Export it as vit_jax or big_vision instead.")
  if config.layer_norm_epsilon != 1e-6:
    logging.warning("timm's ViT uses layer-norm epsilon 1e-6; this model uses %g.", config.layer_norm_epsilon)
  metadata = {"format": "pt", CONFIG_KEY: config.to_json()}
  if path.suffix == ".safetensors":
    file = path
  else:
    file = path / "model.safetensors"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(_timm_hub_config(config, state), indent=2))
  file.parent.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(state, os.fspath(file), metadata=metadata)
  return file


def _timm_hub_config(config: ml_collections.ConfigDict, state: dict) -> dict:
  patch = tuple(config.patches.size)
  size = [int(math.isqrt(_grid_tokens(config, state))) * p for p in patch]
  global_pool = {"token": "token", "gap": "avg", "map": "map"}[config.classifier]
  args = dict(img_size=size, patch_size=list(patch), embed_dim=config.hidden_size,
              depth=config.transformer.num_layers, num_heads=config.transformer.num_heads,
              mlp_ratio=config.transformer.mlp_dim / config.hidden_size, class_token="cls_token" in state,
              global_pool=global_pool, fc_norm=bool(config.pooled_norm), qkv_bias=True,
              act_layer="gelu_tanh" if config.gelu_approximate else "gelu", num_classes=config.num_classes)
  return {"architecture": "vit_custom", "num_classes": config.num_classes, "num_features": config.hidden_size,
          "global_pool": global_pool, "model_args": args,
          "pretrained_cfg": {"mean": list(config.pixel_mean), "std": list(config.pixel_std),
                             "input_size": [3, *size], "num_classes": config.num_classes,
                             "first_conv": "patch_embed.proj", "classifier": "head"},
          CONFIG_KEY: config.to_dict()}


# ---- Hugging Face ----------------------------------------------------------------------------------


def _load_hf(path: epath.Path, num_heads: int | None):
  folder = path if path.is_dir() else path.parent
  info = _json_file(folder / "config.json")
  if not info:
    raise FileNotFoundError(f"No config.json in {folder}: point at the folder that save_pretrained wrote.")
  if info.get("model_type", "vit") != "vit":
    raise ValueError(f"{folder}/config.json has model_type {info['model_type']!r}; only 'vit' is supported.")
  if path.is_dir():
    tensors = _read_hf_weights(folder)
  else:
    tensors, _ = _read_safetensors(path)
  heads = int(info["num_attention_heads"])
  if num_heads is not None and num_heads != heads:
    raise ValueError(f"num_heads={num_heads} but {folder}/config.json says {heads}.")
  act = info.get("hidden_act", "gelu")
  if act not in _HF_GELU:
    raise ValueError(f"{folder}/config.json: hidden_act {act!r} is not supported; vit_jax has "
                     f"{sorted(_HF_GELU)}.")
  if info.get("pooler_act", "tanh") != "tanh":
    raise ValueError(f"{folder}/config.json: pooler_act {info['pooler_act']!r}; only tanh is supported.")
  state = _timm_state_from_hf(_Tensors(tensors, f"Hugging Face checkpoint {folder}"))
  num_patches = _num_patches(info.get("image_size"), info.get("patch_size", 16))
  flat = _flat_from_timm(_Tensors(state, f"Hugging Face checkpoint {folder}"), heads,
                         num_patches=num_patches, global_pool="token")
  mean, std = _hf_normalisation(folder / "preprocessor_config.json")
  base = _embedded_config(info.get(CONFIG_KEY))
  fields = dict(gelu_approximate=_HF_GELU[act], layer_norm_epsilon=float(info.get("layer_norm_eps", 1e-12)),
                pixel_mean=mean, pixel_std=std,
                dropout_rate=float(info.get("hidden_dropout_prob", 0.)),
                attention_dropout_rate=float(info.get("attention_probs_dropout_prob", 0.)))
  return flat, base, fields


def _read_hf_weights(folder: epath.Path) -> dict[str, np.ndarray]:
  index = _json_file(folder / "model.safetensors.index.json")
  if index:
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
      tensors.update(_read_safetensors(folder / shard)[0])
    return tensors
  file = folder / "model.safetensors"
  if not file.exists():
    raise FileNotFoundError(f"No model.safetensors in {folder} (PyTorch .bin files are not read: they are "
                            "pickles). Re-save the model with save_pretrained(safe_serialization=True).")
  return _read_safetensors(file)[0]


def _timm_state_from_hf(tensors: _Tensors) -> dict[str, np.ndarray]:
  """HF names -> timm names; q, k, v are concatenated into timm's fused qkv (the HF pooler -> pre_logits)."""
  prefix = "vit." if any(n.startswith("vit.") for n in tensors.names()) else ""
  state = {}

  def move(hf_name: str, timm_name: str) -> None:
    for suffix in ("", ".weight", ".bias"):
      if hf_name + suffix in tensors:
        state[timm_name + suffix] = tensors.take(hf_name + suffix)

  classic = _block_indices(tensors.names(), re.escape(prefix) + r"encoder\.layer\.(\d+)\.", tensors.source)
  layers = classic or _block_indices(tensors.names(), re.escape(prefix) + r"layers\.(\d+)\.", tensors.source)
  for i in layers:
    hf_block = f"{prefix}encoder.layer.{i}." if classic else f"{prefix}layers.{i}."
    for timm_name, names in _HF_BLOCK.items():
      move(hf_block + names[0 if classic else 1], f"blocks.{i}.{timm_name}")
    for kind in ("weight", "bias"):
      parts = [state.pop(f"blocks.{i}.{x}.{kind}", None) for x in "qkv"]
      if all(p is not None for p in parts):
        state[f"blocks.{i}.attn.qkv.{kind}"] = np.concatenate(parts)
      elif any(p is not None for p in parts):
        raise ValueError(f"{tensors.source}: layer {i} has some but not all of the q/k/v {kind}s.")
  for timm_name, hf_name in _HF_TOP.items():
    move(prefix + hf_name, timm_name)
  if "classifier.weight" in tensors:
    move("classifier", "head")
    if "pre_logits.weight" in state:
      logging.info("%s: ignoring the pooler, which ViTForImageClassification does not use.", tensors.source)
      del state["pre_logits.weight"], state["pre_logits.bias"]
  tensors.finish()
  return state


def _hf_normalisation(file: epath.Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) of [0, 1] pixels that the ViTImageProcessor in `file` applies (0.5, 0.5 when absent)."""
  info = _json_file(file)
  if not info.get("do_normalize", True):
    mean, std = [0.] * 3, [1.] * 3
  else:
    mean, std = info.get("image_mean", [0.5] * 3), info.get("image_std", [0.5] * 3)
  scale = 255. * info.get("rescale_factor", 1 / 255) if info.get("do_rescale", True) else 255.
  if abs(scale - 1.) > 1e-9:  # the processor normalises pixels in [0, scale], not [0, 1]
    mean, std = [m / scale for m in mean], [s / scale for s in std]
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _save_hf(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  if config.classifier != "token" or config.pooled_norm:
    raise ValueError(f"Hugging Face ViT classifies the CLS token after a final norm on all tokens; this "
                     f"model has classifier={config.classifier!r}, pooled_norm={config.pooled_norm}. "
                     "Export it to timm instead.")
  if config.representation_size is not None and config.num_classes:
    raise ValueError("ViTForImageClassification has no pre-logits layer before its classifier; this model "
                     "has representation_size set (export with num_classes=0 to get a ViTModel with pooler).")
  state = _timm_from_flat(flat, config)
  classify = bool(config.num_classes)
  prefix = "vit." if classify else ""
  hf = {}
  rename = {t: prefix + h for t, h in _HF_TOP.items()} | {"head": "classifier"}
  for name, value in state.items():
    match = re.match(r"blocks\.(\d+)\.(.*)\.(weight|bias)$", name)
    if match and match.group(2) == "attn.qkv":
      block = f"{prefix}encoder.layer.{match.group(1)}.attention.attention."
      for part, x in zip(("query", "key", "value"), np.split(value, 3)):
        hf[f"{block}{part}.{match.group(3)}"] = x
    elif match:
      hf[f"{prefix}encoder.layer.{match.group(1)}.{_HF_BLOCK[match.group(2)][0]}.{match.group(3)}"] = value
    else:
      stem, _, kind = name.rpartition(".") if name.endswith((".weight", ".bias")) else (name, "", "")
      hf[rename[stem] + ("." + kind if kind else "")] = value
  path.mkdir(parents=True, exist_ok=True)
  size = int(math.isqrt(_grid_tokens(config, state))) * config.patches.size[0]
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
      label2id={f"LABEL_{i}": i for i in range(config.num_classes)}, **{CONFIG_KEY: config.to_dict()})
  (path / "config.json").write_text(json.dumps(info, indent=2))
  processor = dict(do_normalize=True, do_rescale=True, do_resize=True, image_mean=list(config.pixel_mean),
                   image_std=list(config.pixel_std), image_processor_type="ViTImageProcessor", resample=2,
                   rescale_factor=1 / 255, size={"height": size, "width": size})
  (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
  safetensors.numpy.save_file(hf, os.fspath(path / "model.safetensors"), metadata={"format": "pt"})
  return path / "model.safetensors"


# ---- big_vision and vit_jax .npz -------------------------------------------------------------------


def _load_big_vision(path: epath.Path, num_heads: int | None):
  del num_heads  # explicit in the kernels' shapes
  file = _find_file(path, (), "*.npz", "big_vision checkpoint")
  flat = checkpoint.load_npz(file)
  if any(k.startswith("params/") for k in flat):
    dropped = sorted(k for k in flat if not k.startswith("params/"))
    if dropped:
      logging.info("%s: leaving out the non-parameter arrays %s", file, dropped[:5])
    flat = {k.removeprefix("params/"): v for k, v in flat.items() if k.startswith("params/")}
  if "pos_embedding" in flat and _POSEMB in flat:
    raise ValueError(f"{file} has two position embeddings, pos_embedding and {_POSEMB}.")
  posemb = flat.pop("pos_embedding") if "pos_embedding" in flat else flat.pop(_POSEMB, None)
  if posemb is not None:
    flat[_POSEMB] = _with_class_row(posemb, "cls" in flat, None, str(file))
  return flat, None, dict(gelu_approximate=True, layer_norm_epsilon=1e-6)


def _save_big_vision(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  if (not config.gelu_approximate or config.pooled_norm or config.layer_norm_epsilon != 1e-6
      or config.resnet is not None):
    raise ValueError("big_vision's ViT has the tanh GELU, epsilon 1e-6, no pooled norm and no ResNet stem; "
                     "this model differs. Export it as vit_jax (or timm) instead.")
  flat = dict(flat)
  if _POSEMB in flat:
    posemb = flat.pop(_POSEMB)
    if "cls" in flat:  # big_vision adds no position embedding to the class token: fold it in.
      flat["cls"] = flat["cls"] + posemb[:, :1]
      posemb = posemb[:, 1:]
    flat["pos_embedding"] = posemb
  file = path if path.suffix == ".npz" else path / "model.npz"
  file.parent.mkdir(parents=True, exist_ok=True)
  with file.open("wb") as f:
    np.savez(f, **{"params/" + k: v for k, v in sorted(_stack_linen(flat).items())})
  return file


_BIG_VISION_NAMES = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
                     "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}


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


def _load_vit_jax(path: epath.Path, num_heads: int | None):
  del num_heads  # explicit in the kernels' shapes
  file = _find_file(path, ("model.npz",), "*.npz", "vit_jax checkpoint")
  info = _json_file(file.parent / "config.json")
  base = info if "hidden_size" in info and "transformer" in info else _embedded_config(info.get(CONFIG_KEY))
  return checkpoint.load_npz(file), base, {}


def _save_vit_jax(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  file = path if path.suffix == ".npz" else path / "model.npz"
  config_file = file.parent / "config.json"
  existing = _json_file(config_file)
  if existing and not ("hidden_size" in existing and "transformer" in existing):
    raise ValueError(f"{config_file} exists and is not a vit_jax model config; write to another folder.")
  checkpoint.save_npz(file, checkpoint.params_from_flat(flat))
  config_file.write_text(config.to_json(indent=2))
  return file


_LOADERS = {"timm": _load_timm, "hf": _load_hf, "big_vision": _load_big_vision, "vit_jax": _load_vit_jax}
_SAVERS = {"timm": _save_timm, "hf": _save_hf, "big_vision": _save_big_vision, "vit_jax": _save_vit_jax}


# ---- the model config ------------------------------------------------------------------------------


def _model_config(params: dict, base: dict | None, fields: dict,
                  model_name: str) -> ml_collections.ConfigDict:
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
      classifier="map" if "MAPHead_0" in params else "token" if "cls" in params else "gap",
      pooled_norm="fc_norm" in params, posemb="learn" if "posembed_input" in top else "sincos2d",
      representation_size=int(params["pre_logits"]["kernel"].shape[-1]) if "pre_logits" in params else None,
      num_classes=int(params["head"]["kernel"].shape[-1]) if "head" in params else 0, resnet=None)
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


def _tuples(tree: Any) -> Any:
  """JSON lists back to the tuples the model configs use."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, (list, tuple)) else tree


def _apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise ValueError(f"Unknown model config keys {unknown}; valid keys: {sorted(config.keys())}.")
  for key, value in overrides.items():
    config[key] = tuple(value) if isinstance(value, list) else value


def _check_fits(config: ml_collections.ConfigDict, params: dict, source: str) -> None:
  """Builds the model abstractly and requires the converted params to have exactly its shapes."""
  posemb = params["Transformer"].get("posembed_input", {}).get("pos_embedding")
  tokens = (posemb.shape[1] - (config.classifier == "token")) if posemb is not None else 1
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


# ---- small helpers ---------------------------------------------------------------------------------


def _find_file(path: epath.Path, names: tuple[str, ...], pattern: str, what: str) -> epath.Path:
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


def _read_safetensors(file: epath.Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  try:
    with safetensors.safe_open(os.fspath(file), framework="numpy") as f:
      tensors = {name: f.get_tensor(name) for name in f.keys()}
      metadata = f.metadata() or {}
  except Exception as e:  # safetensors raises its own error types, e.g. for bf16 (no numpy dtype)
    raise ValueError(f"Cannot read {file} as safetensors with NumPy: {e}. (bfloat16 files: convert them "
                     "to float32 first.)") from e
  return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in tensors.items()}, metadata


def _json_file(file: epath.Path) -> dict:
  if not file.exists():
    return {}
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON: {e}") from e


def _embedded_config(value: str | dict | None) -> dict | None:
  return json.loads(value) if isinstance(value, str) else value


_TIMM_WIDTHS = {"tiny": (192, 3), "small": (384, 6), "medium": (512, 8), "base": (768, 12),
                "large": (1024, 16), "huge": (1280, 16), "giant": (1408, 16), "gigantic": (1664, 16)}


def _heads_from_timm_name(architecture: str | None, tensors: dict) -> int | None:
  """Heads of a standard timm name (`vit_base_patch16_224.augreg_in21k`), if its width matches."""
  match = re.match(r"vit_([a-z]+)_patch", architecture or "")
  width, heads = _TIMM_WIDTHS.get(match.group(1) if match else "", (None, None))
  weight = tensors.get("patch_embed.proj.weight")
  return heads if weight is not None and weight.shape[0] == width else None


def _num_patches(img_size: Any, patch_size: Any) -> int | None:
  if img_size is None or patch_size is None:
    return None
  img = (img_size,) * 2 if isinstance(img_size, int) else tuple(img_size)
  patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
  return (img[0] // patch[0]) * (img[1] // patch[1])


def _with_class_row(posemb: np.ndarray, class_token: bool, num_patches: int | None,
                    source: str) -> np.ndarray:
  """Adds a zero class-token row to a position embedding of the patches only (big_vision, timm
  `no_embed_class`): the class token then gets no position embedding, as in those models."""
  rows = posemb.shape[1]
  if not class_token:
    return posemb
  if num_patches is not None:
    patches_only = rows == num_patches
  elif math.isqrt(rows - 1)**2 == rows - 1 or math.isqrt(rows)**2 == rows:
    patches_only = math.isqrt(rows)**2 == rows
  else:
    raise ValueError(f"{source}: cannot tell whether the position embedding {posemb.shape} has a class-token "
                     "row (its grid is not square); give the image size in a config.json beside it.")
  return np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1) if patches_only else posemb


def _block_indices(names: list[str], pattern: str, source: str) -> list[int]:
  indices = sorted({int(m.group(1)) for n in names if (m := re.match(pattern, n))})
  if indices != list(range(len(indices))):
    raise ValueError(f"{source}: block numbers {indices} are not 0..{len(indices) - 1}.")
  return indices


def _grid_tokens(config: ml_collections.ConfigDict, state: dict) -> int:
  tokens = state["pos_embed"].shape[1] - ("cls_token" in state)
  if math.isqrt(tokens)**2 != tokens:
    raise ValueError(f"Exports need a square patch grid; the position embedding has {tokens} patch tokens.")
  return tokens


# ---- CLI -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m vit_jax.convert", description="Convert ViT checkpoints between vit_jax, timm, "
      "Hugging Face and big_vision formats.")
  parser.add_argument("--from", dest="source_format", required=True, choices=FORMATS)
  parser.add_argument("--to", dest="target_format", required=True, choices=FORMATS)
  parser.add_argument("--num_heads", type=int, default=None,
                      help="attention heads (timm state dicts without a config.json)")
  parser.add_argument("src", help="weights file or the folder holding it")
  parser.add_argument("dst", help="file or folder to write")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  try:
    config, params = load(args.src, args.source_format, num_heads=args.num_heads)
    written = save(params, config, args.dst, args.target_format)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(2, f"error: {e}\n")
  count = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
  print(f"Wrote {written} ({args.source_format} -> {args.target_format}): {count:,} parameters, "
        f"{config.transformer.num_layers} blocks, width {config.hidden_size}, "
        f"{config.transformer.num_heads} heads, classifier {config.classifier}.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
