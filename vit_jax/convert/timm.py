"""timm ViT state dicts (safetensors) in and out.

timm tensors are PyTorch layouts: Linear (out, in), Conv OIHW, q/k/v fused head-major. Shapes give the
architecture except the number of heads (`num_heads`, or the timm hub `config.json` beside the weights)
and the pooling, which the hub config's `global_pool` gives. Hugging Face's converter goes through these
names as well (`vit_jax.convert.hf`).
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

_BLOCK = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2", "mlp.fc1": "MlpBlock_3/Dense_0",
          "mlp.fc2": "MlpBlock_3/Dense_1", "attn.proj": "MultiHeadDotProductAttention_1/out"}
_MAP = {"attn_pool.proj": "MAPHead_0/MultiHeadDotProductAttention_0/out", "attn_pool.norm":
        "MAPHead_0/LayerNorm_0", "attn_pool.mlp.fc1": "MAPHead_0/MlpBlock_0/Dense_0",
        "attn_pool.mlp.fc2": "MAPHead_0/MlpBlock_0/Dense_1"}
_GLOBAL_POOL = {"token": "token", "gap": "avg", "map": "map"}  # our classifier -> timm global_pool
_WIDTHS = {"tiny": (192, 3), "small": (384, 6), "medium": (512, 8), "base": (768, 12),
           "large": (1024, 16), "huge": (1280, 16), "giant": (1408, 16), "gigantic": (1664, 16)}


def load(path: epath.Path, num_heads: int | None):
  """(official flat params, our embedded config or None, config fields the timm files declare)."""
  file = common.find_file(path, ("model.safetensors",), "*.safetensors", "timm state dict")
  tensors, metadata = common.read_safetensors(file)
  if "patch_embed.proj.weight" not in tensors:
    raise ValueError(f"{file} is not a timm ViT state dict: it has no patch_embed.proj.weight (its names: "
                     f"{sorted(tensors)[:4]} ...). A Hugging Face folder loads with source format 'hf'.")
  info = common.json_file(file.parent / "config.json")
  base = (common.embedded_config(metadata.get(common.CONFIG_KEY))
          or common.embedded_config(info.get(common.CONFIG_KEY)))
  args = info.get("model_args", {})
  pretrained = info.get("pretrained_cfg", {})
  base = base or {}
  num_heads = (num_heads or args.get("num_heads") or info.get("num_heads")
               or base.get("transformer", {}).get("num_heads")
               or _heads_from_name(info.get("architecture"), tensors))
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
    global_pool = _GLOBAL_POOL[base["classifier"]]
  source = f"timm state dict {file}"
  include_prefix = args.get("pool_include_prefix")
  if include_prefix is None and base.get("classifier") == "map":
    include_prefix = base.get("map_class_token")  # our export without a hub config: our config says
  pooling_fields = pooling(tensors, global_pool, source, include_prefix=bool(include_prefix))
  img_size = args.get("img_size", info.get("img_size"))
  flat = flat_from_timm(common.Tensors(tensors, source), int(num_heads), num_patches=common.num_patches(
      img_size, tensors["patch_embed.proj.weight"].shape[2:]))
  epsilon = info.get("layer_norm_eps", base.get("layer_norm_epsilon", 1e-6))
  fields = dict(gelu_approximate=bool(gelu_approximate), pixel_mean=tuple(mean), pixel_std=tuple(std),
                layer_norm_epsilon=float(epsilon), **pooling_fields)
  return flat, base, fields


def pooling(tensors: dict[str, np.ndarray], global_pool: str | None, source: str, *,
            include_prefix: bool = False) -> dict:
  """The model config's pooling fields where timm's `global_pool` says more than the shapes.

  A class token beside average pooling of the patch tokens (timm global_pool='avg', e.g. MAE) is our
  `classifier='gap', class_token=True`; beside an attention pool (global_pool='map', timm's default for
  it) it is `classifier='map', class_token=True` with `map_class_token=False`: timm drops the class token
  before the pool unless `pool_include_prefix`. Poolings vit_jax's model cannot compute are refused
  rather than loaded as another model.
  """
  class_token = "cls_token" in tensors
  if "attn_pool.latent" in tensors:
    return dict(classifier="map", class_token=True, map_class_token=include_prefix) if class_token else {}
  if global_pool not in (None, "token", "avg", ""):
    raise ValueError(f"{source}: global_pool={global_pool!r} is not supported (token, avg, map).")
  if global_pool == "token":
    if not class_token:
      raise ValueError(f"{source}: global_pool='token' but there is no cls_token.")
    return dict(classifier="token")
  if class_token and global_pool == "avg":
    if include_prefix:
      raise ValueError(f"{source}: pool_include_prefix=True averages the class token with the patch "
                       "tokens; vit_jax's gap head averages the patch tokens only.")
    return dict(classifier="gap", class_token=True)
  if class_token and global_pool is None and "fc_norm.weight" in tensors:
    raise ValueError(
        f"{source} has a class token and fc_norm but does not say how it pools: the class token or the "
        "average of the patch tokens (e.g. MAE). Put a config.json beside it with \"global_pool\": "
        "\"token\" or \"avg\".")
  return {}


def flat_from_timm(tensors: common.Tensors, num_heads: int, *,
                   num_patches: int | None) -> dict[str, np.ndarray]:
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
  dist = tensors.take_optional("dist_token")  # DeiT's distilled models (timm VisionTransformerDistilled)
  if dist is not None:
    flat["dist"] = dist
  posemb = tensors.take_optional("pos_embed")
  if posemb is not None:
    flat[common.POSEMB] = common.with_class_row(posemb, cls is not None, num_patches, tensors.source)

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

  for i in common.block_indices(tensors.names(), r"blocks\.(\d+)\.", tensors.source):
    for timm_name, name in _BLOCK.items():
      _take_linear_or_norm(tensors, f"blocks.{i}.{timm_name}", f"Transformer/encoderblock_{i}/{name}", flat)
    attention(f"blocks.{i}.attn.", {"qkv": ("query", "key", "value")},
              f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1")
  if "attn_pool.latent" in tensors:
    flat["MAPHead_0/probe"] = tensors.take("attn_pool.latent")
    if flat["MAPHead_0/probe"].shape[1] != 1:
      raise ValueError(f"{tensors.source}: attn_pool has several latents; vit_jax's MAP head has one.")
    for timm_name, name in _MAP.items():
      _take_linear_or_norm(tensors, timm_name, name, flat)
    attention("attn_pool.", {"q": ("query",), "kv": ("key", "value")},
              "MAPHead_0/MultiHeadDotProductAttention_0")
  for timm_name, name in (("norm", "Transformer/encoder_norm"), ("fc_norm", "fc_norm"),
                          ("pre_logits", "pre_logits"), ("head", "head"), ("head_dist", "head_dist")):
    if timm_name + ".weight" in tensors:
      _take_linear_or_norm(tensors, timm_name, name, flat)
  if "Transformer/encoder_norm/scale" not in flat and "fc_norm/scale" not in flat:
    raise ValueError(f"{tensors.source} has neither norm.* nor fc_norm.*: a model without a final norm "
                     "is not supported.")
  tensors.finish()
  return flat


def _take_linear_or_norm(tensors: common.Tensors, torch_name: str, name: str, flat: dict) -> None:
  weight = tensors.take(torch_name + ".weight")
  flat[name + ("/kernel" if weight.ndim == 2 else "/scale")] = weight.T if weight.ndim == 2 else weight
  bias = tensors.take_optional(torch_name + ".bias")
  flat[name + "/bias"] = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias


def timm_from_flat(flat: dict[str, np.ndarray], config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
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
  if "dist" in flat:
    state["dist_token"] = flat.pop("dist")
  if common.POSEMB not in flat:
    raise ValueError("A model with posemb='sincos2d' stores no position embedding and its config has no "
                     "image size to compute one for; export it as vit_jax or big_vision.")
  state["pos_embed"] = flat.pop(common.POSEMB)

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
    for timm_name, name in _BLOCK.items():
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
    for timm_name, name in _MAP.items():
      (norm if "LayerNorm" in name else linear)(name, timm_name)
  for name, timm_name in (("Transformer/encoder_norm", "norm"), ("fc_norm", "fc_norm")):
    if name + "/scale" in flat:
      norm(name, timm_name)
  for name in ("pre_logits", "head", "head_dist"):
    if name + "/kernel" in flat:
      linear(name, name)
  if flat:
    raise ValueError(f"No timm/HF name for the parameters {sorted(flat)}.")
  return {k: np.ascontiguousarray(v) for k, v in state.items()}


def save(flat: dict, config: ml_collections.ConfigDict, path: epath.Path) -> epath.Path:
  """A `.safetensors` path gets the state dict alone (our config in its metadata); any other path is a
  folder with `model.safetensors` and a timm hub `config.json`."""
  state = timm_from_flat(flat, config)
  if "pre_logits.weight" in state:
    raise ValueError("timm's VisionTransformer has no pre-logits (representation) layer; this model has "
                     "representation_size set. Export it as vit_jax or big_vision instead.")
  if config.layer_norm_epsilon != 1e-6:
    logging.warning("timm's ViT uses layer-norm epsilon 1e-6; this model uses %g.", config.layer_norm_epsilon)
  metadata = {"format": "pt", common.CONFIG_KEY: config.to_json()}
  if path.suffix == ".safetensors":
    file = path
  else:
    file = path / "model.safetensors"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(_hub_config(config, state), indent=2))
  file.parent.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(state, os.fspath(file), metadata=metadata)
  return file


def _hub_config(config: ml_collections.ConfigDict, state: dict) -> dict:
  patch = tuple(config.patches.size)
  size = [int(math.isqrt(common.grid_tokens(state))) * p for p in patch]
  global_pool = _GLOBAL_POOL[config.classifier]
  args = dict(img_size=size, patch_size=list(patch), embed_dim=config.hidden_size,
              depth=config.transformer.num_layers, num_heads=config.transformer.num_heads,
              mlp_ratio=config.transformer.mlp_dim / config.hidden_size, class_token="cls_token" in state,
              global_pool=global_pool, fc_norm=bool(config.pooled_norm), qkv_bias=True,
              pool_include_prefix=global_pool == "map" and "cls_token" in state and config.map_class_token,
              act_layer="gelu_tanh" if config.gelu_approximate else "gelu", num_classes=config.num_classes)
  return {"architecture": "vit_custom", "num_classes": config.num_classes, "num_features": config.hidden_size,
          "global_pool": global_pool, "model_args": args,
          "pretrained_cfg": {"mean": list(config.pixel_mean), "std": list(config.pixel_std),
                             "input_size": [3, *size], "num_classes": config.num_classes,
                             "first_conv": "patch_embed.proj", "classifier": "head"},
          common.CONFIG_KEY: config.to_dict()}


def _heads_from_name(architecture: str | None, tensors: dict) -> int | None:
  """Heads of a standard timm name (`vit_base_patch16_224.augreg_in21k`), if its width matches."""
  match = re.match(r"vit_([a-z]+)_patch", architecture or "")
  width, heads = _WIDTHS.get(match.group(1) if match else "", (None, None))
  weight = tensors.get("patch_embed.proj.weight")
  return heads if weight is not None and weight.shape[0] == width else None
