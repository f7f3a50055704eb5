"""Every named ViT variant of the paper and of AugReg, spelled as the official repository spells them.

`get_model_config("ViT-B_16")` returns the official schema (`patches.size`, `hidden_size`,
`transformer.*`, `classifier`, `representation_size`, `resnet`) plus `num_classes` and the knobs this
codebase adds (dtype, remat, scan, fused attention, ...), all with defaults.
"""

import re

import ml_collections

# name: (hidden_size, mlp_dim, num_heads, num_layers, dropout_rate), as published.
_WIDTHS = {
    "Ti": (192, 768, 3, 12, 0.0),
    "S": (384, 1536, 6, 12, 0.0),
    "B": (768, 3072, 12, 12, 0.0),
    "L": (1024, 4096, 16, 24, 0.1),
    "H": (1280, 5120, 16, 32, 0.1),
}
_VIT_PATCHES = {"Ti": (16,), "S": (16, 32), "B": (8, 16, 32), "L": (16, 32), "H": (14,)}
# Hybrid name: (ViT it extends, ResNet stages, patch size on the stem's feature map).
_HYBRIDS = {
    "R+ViT-Ti_16": ("ViT-Ti_16", (), 8),
    "R26+ViT-S_32": ("ViT-S_32", (2, 2, 2, 2), 1),
    "R26+ViT-B_32": ("ViT-B_32", (2, 2, 2, 2), 1),
    "R50+ViT-B_16": ("ViT-B_16", (3, 4, 9), 1),
    "R50+ViT-L_32": ("ViT-L_32", (3, 4, 6, 3), 1),
}


def _vit(name: str, width: str, patch: int) -> ml_collections.ConfigDict:
  hidden_size, mlp_dim, num_heads, num_layers, dropout_rate = _WIDTHS[width]
  return ml_collections.ConfigDict(dict(
      model_name=name,
      patches=dict(size=(patch, patch)),
      hidden_size=hidden_size,
      transformer=dict(mlp_dim=mlp_dim, num_heads=num_heads, num_layers=num_layers,
                       dropout_rate=dropout_rate, attention_dropout_rate=0.0),
      classifier="token",        # token | gap | map
      class_token=None,          # None: only for the token classifier; True adds one to gap/map
      map_class_token=True,      # map beside a class token: the MAP head attends to it (False: timm's)
      representation_size=None,  # int: a tanh pre-logits layer of that width before the head
      head_bias_init=0.0,        # the head's initial bias, e.g. -10 for sigmoid pretraining (big_vision)
      resnet=None,               # hybrids: dict(num_layers=stages, width_factor=1)
      num_classes=1000,
      posemb="learn",            # learn | sincos2d
      stochastic_depth=0.0,      # drop-path rate of the last block (linear in depth)
      dtype="float32",           # compute dtype; parameters stay float32
      remat=False,               # recompute each block's activations in the backward pass
      remat_policy="nothing_saveable",  # what remat keeps: nothing_saveable | dots_saveable | ...
      scan=False,                # nn.scan over blocks: compile time independent of depth
      fused_attention=False,     # jax.nn.dot_product_attention (cuDNN flash attention on GPU)
      gelu_approximate=True,     # the official (tanh) GELU; timm and HF use the exact one
      layer_norm_epsilon=1e-6,
      pooled_norm=False,         # timm's fc_norm: normalise after pooling instead of all tokens
      pixel_mean=(0.5, 0.5, 0.5),  # normalisation the weights expect of [0, 1] pixels
      pixel_std=(0.5, 0.5, 0.5),
      distilled=False,           # DeiT: a distillation token and head (head_dist) beside the class token
  ))


def _hybrid(name: str) -> ml_collections.ConfigDict:
  base, stages, patch = _HYBRIDS[name]
  config = get_model_config(base)
  config.model_name = name
  config.patches.size = (patch, patch)
  config.resnet = ml_collections.ConfigDict(dict(num_layers=stages, width_factor=1))
  return config


MODEL_NAMES = tuple(
    [f"ViT-{width}_{patch}" for width, patches in _VIT_PATCHES.items() for patch in patches]
    + list(_HYBRIDS))


# How the published names are spelled: `ViT-B_16`, `R50+ViT-B_16`, `R+ViT-Ti_16`.
_PUBLISHED_SPELLING = re.compile(r"^(R\d*\+)?ViT-[A-Za-z]+_\d+$")


def check_model_name(name: str) -> None:
  """A name spelled like a published variant must be one: `ViT-Q_99` fails with the known names.

  The name labels the model (logs, results); the other fields of the config build it. A model of one's
  own takes a name that cannot pass for a published variant (e.g. `ViT-digits`).
  """
  if _PUBLISHED_SPELLING.match(name) and name not in MODEL_NAMES:
    raise ValueError(f"Unknown model {name!r} (config.model.model_name); known models: "
                     f"{', '.join(MODEL_NAMES)}. Pick one with the config file's argument, or give a model "
                     "of your own a name of its own (e.g. 'ViT-digits').")


def get_model_config(name: str) -> ml_collections.ConfigDict:
  """The config of the named variant, e.g. `ViT-B_16` or `R50+ViT-B_16`."""
  if name not in MODEL_NAMES:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}.")
  if name in _HYBRIDS:
    return _hybrid(name)
  width, patch = name.removeprefix("ViT-").split("_")
  return _vit(name, width, int(patch))
