"""ResNetV2 stem of the paper's hybrid models: weight-standardised convolutions and GroupNorm (BiT).

Names (`conv_root`, `gn_root`, `block{i}/unit{j}/conv1`...) follow the published R50+ViT checkpoints,
whose stem parameters sit at the top level of the model, beside `embedding`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def weight_standardize(w, axis, eps: float):
  """(w - mean) / (std + eps), the authors' form (BiT, vision_transformer, big_vision).

  Not `sqrt(var + eps)`: with real kernels (std ~1e-2) the two differ by several percent.
  """
  w = w - jnp.mean(w, axis=axis)
  return w / (jnp.std(w, axis=axis) + eps)


class StdConv(nn.Conv):
  """Convolution whose kernel is standardised (zero mean, unit std per output channel)."""

  def param(self, name, *args, **kwargs):
    param = super().param(name, *args, **kwargs)
    if name == "kernel":
      param = weight_standardize(param, axis=[0, 1, 2], eps=1e-5)
    return param


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1 at 4x width, with a projected shortcut."""
  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda features, kernel, strides, name: StdConv(
        features, kernel, strides, use_bias=False, dtype=self.dtype, name=name)
    norm = lambda name, **kw: nn.GroupNorm(dtype=self.dtype, name=name, **kw)
    residual = x
    if x.shape[-1] != self.features * 4 or self.strides != (1, 1):
      residual = conv(self.features * 4, (1, 1), self.strides, "conv_proj")(residual)
      residual = norm("gn_proj")(residual)
    y = nn.relu(norm("gn1")(conv(self.features, (1, 1), (1, 1), "conv1")(x)))
    y = nn.relu(norm("gn2")(conv(self.features, (3, 3), self.strides, "conv2")(y)))
    y = norm("gn3", scale_init=nn.initializers.zeros)(conv(self.features * 4, (1, 1), (1, 1), "conv3")(y))
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  block_size: int
  features: int
  first_stride: tuple[int, int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.block_size):
      strides = self.first_stride if i == 0 else (1, 1)
      x = ResidualUnit(self.features, strides=strides, dtype=self.dtype, name=f"unit{i + 1}")(x)
    return x


def stem(x, *, num_layers: Sequence[int], width_factor: float, dtype: Dtype = jnp.float32):
  """Root conv + max-pool (4x down), then one stage per entry of `num_layers` (2x down after the first).

  Called inside the parent's compact `__call__`, so the modules it creates are the parent's children
  and keep the checkpoint's top-level names.
  """
  width = int(64 * width_factor)
  x = StdConv(width, (7, 7), (2, 2), use_bias=False, dtype=dtype, name="conv_root")(x)
  x = nn.relu(nn.GroupNorm(dtype=dtype, name="gn_root")(x))
  x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
  for i, block_size in enumerate(num_layers):
    x = ResNetStage(block_size, width * 2**i, first_stride=(1, 1) if i == 0 else (2, 2), dtype=dtype,
                    name=f"block{i + 1}")(x)
  return x
