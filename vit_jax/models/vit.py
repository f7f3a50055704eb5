"""The Vision Transformer (Dosovitskiy et al. 2021) as pure Flax linen modules.

Module and parameter names follow the published `.npz` checkpoints (`embedding`, `cls`,
`Transformer/posembed_input/pos_embedding`, `Transformer/encoderblock_{i}/LayerNorm_0`,
`MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`, `encoder_norm`, `pre_logits`, `head`), so the
code and the weights on disk tell one story. Inputs are NHWC float images normalised to [-1, 1].
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import resnet

Dtype = Any


def fused_attention(query, key, value, mask=None, dtype=None, **unused_kwargs):
  """`jax.nn.dot_product_attention` (cuDNN flash attention on GPU) behind flax's `attention_fn` API."""
  del unused_kwargs
  query, key, value = (x.astype(dtype or query.dtype) for x in (query, key, value))
  return jax.nn.dot_product_attention(query, key, value, mask=mask)


def split_heads_attention(query, key, value, mask=None, dropout_rng=None, dropout_rate=0.,
                          broadcast_dropout=True, deterministic=True, dtype=None, precision=None,
                          force_fp32_for_softmax=False, module=None):
  """`nn.dot_product_attention` computed one head at a time: the same math, and the same sown
  'attention_weights' [batch, heads, q, k].

  On XLA:CPU the forward pass runs faster with one small dot per head than with one dot batched over
  batch and heads (ViT-S/16 on 2 cores: 1.22x), but the backward pass slower (train step 0.88x; see
  benchmarks/RESULTS.md), so the model uses it for inference only. Masks and attention dropout take
  flax's path.
  """
  if mask is not None or (dropout_rate > 0. and not deterministic):
    return nn.dot_product_attention(
        query, key, value, mask=mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
        broadcast_dropout=broadcast_dropout, deterministic=deterministic, dtype=dtype,
        precision=precision, force_fp32_for_softmax=force_fp32_for_softmax, module=module)
  dtype = dtype or query.dtype
  query, key, value = (x.astype(dtype) for x in (query, key, value))
  query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
  weights, outputs = [], []
  for head in range(query.shape[-2]):
    logits = jnp.einsum("...qd,...kd->...qk", query[..., head, :], key[..., head, :],
                        precision=precision)
    if force_fp32_for_softmax and dtype != jnp.float32:
      w = jax.nn.softmax(logits.astype(jnp.float32))
    else:
      w = jax.nn.softmax(logits).astype(dtype)
    weights.append(w)
    outputs.append(jnp.einsum("...qk,...kd->...qd", w, value[..., head, :], precision=precision))
  if module is not None:
    module.sow("intermediates", "attention_weights", jnp.stack(weights, axis=-3))
  return jnp.stack(outputs, axis=-2)


def _unfused_attention(train: bool) -> Callable:
  """The faster exact attention for the pass being traced: per-head dots for inference on CPU."""
  if jax.default_backend() == "cpu" and not train:
    return split_heads_attention
  return nn.dot_product_attention


def posemb_sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding (MoCo v3, big_vision): [1, height * width, dim]."""
  if dim % 4:
    raise ValueError(f"The sin-cos position embedding needs hidden_size % 4 == 0, got {dim}.")
  y, x = np.mgrid[:height, :width]
  omega = 1. / temperature**(np.arange(dim // 4) / (dim // 4 - 1))
  y = np.einsum("m,d->md", y.flatten(), omega)
  x = np.einsum("m,d->md", x.flatten(), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None].astype(np.float32)


class AddPositionEmbs(nn.Module):
  """Adds a learned position embedding of the token count it is first called with."""
  posemb_init: Callable = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, x):
    pos_embedding = self.param("pos_embedding", self.posemb_init, (1,) + x.shape[1:], jnp.float32)
    return x + pos_embedding.astype(x.dtype)


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.
  gelu_approximate: bool = True

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    dense = lambda features: nn.Dense(
        features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6))
    y = dense(self.mlp_dim)(x)
    y = nn.gelu(y, approximate=self.gelu_approximate)
    y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
    y = dense(x.shape[-1])(y)
    return nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example, scaling the kept ones."""
  rate: float | jax.Array

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    if deterministic or (isinstance(self.rate, float) and self.rate == 0.):
      return x
    keep = 1. - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.).astype(x.dtype)


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""
  mlp_dim: int
  num_heads: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.
  attention_dropout_rate: float = 0.
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = True
  fused_attention: bool = False

  @nn.compact
  def __call__(self, inputs, drop_path_rate, deterministic: bool):
    """Returns (output, None): the (carry, per-layer output) form that `nn.scan` wants."""
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype, name=name)
    x = norm("LayerNorm_0")(inputs)
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
        broadcast_dropout=False, dropout_rate=self.attention_dropout_rate,
        attention_fn=fused_attention if self.fused_attention else _unfused_attention(not deterministic),
        name="MultiHeadDotProductAttention_1",
    )(x, x, deterministic=deterministic, sow_weights=not self.fused_attention)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    x = inputs + DropPath(drop_path_rate)(x, deterministic=deterministic)
    y = norm("LayerNorm_2")(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dtype=self.dtype, dropout_rate=self.dropout_rate,
                 gelu_approximate=self.gelu_approximate, name="MlpBlock_3")(y, deterministic=deterministic)
    return x + DropPath(drop_path_rate)(y, deterministic=deterministic), None


REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")


def remat_policy(name: str) -> Callable:
  """`jax.checkpoint_policies.<name>`: what remat keeps from the forward pass (nothing: least memory)."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"model.remat_policy={name!r} is unknown; use one of {list(REMAT_POLICIES)}.")
  return getattr(jax.checkpoint_policies, name)


class Encoder(nn.Module):
  """Position embedding, the stack of blocks, and the final norm.

  With `scan=True` the blocks are one `nn.scan` (parameters stacked under `encoderblock` with a leading
  layer axis): compile time no longer grows with depth. `vit_jax.checkpoint` converts that layout to and
  from the published per-block one.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.
  attention_dropout_rate: float = 0.
  stochastic_depth: float = 0.
  dtype: Dtype = jnp.float32
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = True
  fused_attention: bool = False
  posemb: str = "learn"
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan: bool = False
  final_norm: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.posemb == "learn":
      x = AddPositionEmbs(name="posembed_input")(x)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)

    block_kwargs = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype=self.dtype,
        dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
        layer_norm_epsilon=self.layer_norm_epsilon, gelu_approximate=self.gelu_approximate,
        fused_attention=self.fused_attention)
    # Stochastic depth grows linearly with depth, from 0 at the first block to the configured rate.
    drop_path_rates = np.linspace(0., self.stochastic_depth, self.num_layers)
    # remat's static_argnums count `self` as 0: (self, x, drop_path_rate, deterministic).
    policy = remat_policy(self.remat_policy)
    if self.scan:
      block = nn.remat(Encoder1DBlock, static_argnums=(3,), policy=policy) if self.remat else Encoder1DBlock
      x, _ = nn.scan(
          block, variable_axes={"params": 0, "intermediates": 0},
          split_rngs={"params": True, "dropout": True}, in_axes=(0, nn.broadcast),
          length=self.num_layers, metadata_params={nn.PARTITION_NAME: "layers"},
      )(name="encoderblock", **block_kwargs)(x, jnp.asarray(drop_path_rates), not train)
    else:
      block = nn.remat(Encoder1DBlock, static_argnums=(2, 3), policy=policy) if self.remat else Encoder1DBlock
      for i, rate in enumerate(drop_path_rates):
        x, _ = block(name=f"encoderblock_{i}", **block_kwargs)(x, float(rate), not train)
    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype, name="encoder_norm")(x)
    return x


class MAPHead(nn.Module):
  """Multi-head attention pooling (big_vision): a learned probe attends over all tokens."""
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = True

  @nn.compact
  def __call__(self, x):
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]), jnp.float32)
    probe = jnp.tile(probe.astype(x.dtype), [x.shape[0], 1, 1])
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform())(probe, x)
    y = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype)(x)
    x = x + MlpBlock(mlp_dim=self.mlp_dim, dtype=self.dtype, gelu_approximate=self.gelu_approximate)(
        y, deterministic=True)
    return x[:, 0]


class VisionTransformer(nn.Module):
  """ViT classifier; `num_classes=0` returns the pooled (pre-logits) features instead of logits.

  Attributes mirror the official model config (`patches`, `hidden_size`, `transformer`, `classifier`,
  `representation_size`, `resnet`) plus the knobs for speed (`dtype`, `remat`, `scan`,
  `fused_attention`) and for other checkpoint families (`posemb`, `gelu_approximate`,
  `layer_norm_epsilon`, `pooled_norm`, `pixel_mean`/`pixel_std`).
  """
  num_classes: int
  patches: Sequence[int]
  hidden_size: int
  transformer: dict
  classifier: str = "token"
  class_token: bool | None = None  # None: only with the token classifier (timm: cls + avg pooling)
  map_class_token: bool = True  # map + class token: the MAP head attends to it too; False: not (timm)
  representation_size: int | None = None
  head_bias_init: float = 0.  # e.g. -10 for sigmoid pretraining (big_vision's init_head_bias)
  resnet: dict | None = None
  posemb: str = "learn"
  stochastic_depth: float = 0.
  dtype: Dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan: bool = False
  fused_attention: bool = False
  gelu_approximate: bool = True
  layer_norm_epsilon: float = 1e-6
  pooled_norm: bool = False
  pixel_mean: Sequence[float] = (0.5, 0.5, 0.5)
  pixel_std: Sequence[float] = (0.5, 0.5, 0.5)
  distilled: bool = False  # DeiT: a distillation token beside the class token, with its own head

  @nn.compact
  def __call__(self, images, *, train: bool = False, distillation_heads: bool = False):
    """Logits [B, num_classes] (features with num_classes=0). A distilled model returns the mean of
    its two heads, or with `distillation_heads=True` both: (class-token logits, distillation logits)."""
    x = self._normalize_pixels(images)
    if self.resnet is not None:
      x = resnet.stem(x, num_layers=self.resnet["num_layers"], width_factor=self.resnet["width_factor"],
                      dtype=self.dtype)
    patch_h, patch_w = self.patches
    if x.shape[1] % patch_h or x.shape[2] % patch_w:
      raise ValueError(
          f"Image size {tuple(images.shape[1:3])} gives a {x.shape[1]}x{x.shape[2]} input to the patch "
          f"embedding, which is not a multiple of the patch size {tuple(self.patches)}; resize the images "
          "to a multiple of the patch size (times the ResNet stem's stride for hybrids).")
    x = nn.Conv(self.hidden_size, kernel_size=(patch_h, patch_w), strides=(patch_h, patch_w),
                padding="VALID", dtype=self.dtype, name="embedding")(x)
    n, h, w, c = x.shape
    x = jnp.reshape(x, [n, h * w, c])
    if self.posemb == "sincos2d":
      x = x + posemb_sincos_2d(h, w, c).astype(x.dtype)
    elif self.posemb != "learn":
      raise ValueError(f"Unknown posemb {self.posemb!r}; use 'learn' or 'sincos2d'.")
    if self._has_class_token:
      cls = self.param("cls", nn.initializers.zeros, (1, 1, c), jnp.float32)
      x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), [n, 1, 1]), x], axis=1)
    if self.distilled:
      dist = self.param("dist", nn.initializers.zeros, (1, 1, c), jnp.float32)
      x = jnp.concatenate([x[:, :1], jnp.tile(dist.astype(x.dtype), [n, 1, 1]), x[:, 1:]], axis=1)

    x = Encoder(
        **self.transformer, stochastic_depth=self.stochastic_depth, dtype=self.dtype,
        layer_norm_epsilon=self.layer_norm_epsilon, gelu_approximate=self.gelu_approximate,
        fused_attention=self.fused_attention, posemb=self.posemb, remat=self.remat,
        remat_policy=self.remat_policy, scan=self.scan,
        final_norm=not self.pooled_norm, name="Transformer")(x, train=train)

    if self.distilled:
      return self._distillation_heads(x, distillation_heads)
    x = self._pool(x)
    if self.representation_size is not None:
      x = nn.tanh(nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits")(x))
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init), name="head")(x)
    return x.astype(jnp.float32)

  def _distillation_heads(self, x, both: bool):
    """DeiT (Touvron et al. 2021): the class token feeds `head`, the distillation token `head_dist`;
    inference averages the two heads' logits (features: the two tokens)."""
    if self.classifier != "token" or self.representation_size is not None or self.pooled_norm:
      raise ValueError("distilled=True needs classifier='token', no representation_size and no "
                       f"pooled_norm (DeiT's layout); got classifier={self.classifier!r}, "
                       f"representation_size={self.representation_size}, pooled_norm={self.pooled_norm}.")
    if not self.num_classes:
      return ((x[:, 0] + x[:, 1]) / 2).astype(jnp.float32)
    dense = lambda name: nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                                  name=name)
    logits = (dense("head")(x[:, 0]).astype(jnp.float32), dense("head_dist")(x[:, 1]).astype(jnp.float32))
    return logits if both else (logits[0] + logits[1]) / 2

  @property
  def _has_class_token(self) -> bool:
    return self.classifier == "token" if self.class_token is None else self.class_token

  def _normalize_pixels(self, images):
    """Maps [-1, 1] inputs to the normalisation the weights were trained with (identity by default)."""
    x = images.astype(self.dtype)
    if tuple(self.pixel_mean) == (0.5, 0.5, 0.5) and tuple(self.pixel_std) == (0.5, 0.5, 0.5):
      return x
    mean, std = jnp.asarray(self.pixel_mean, self.dtype), jnp.asarray(self.pixel_std, self.dtype)
    return ((x + 1.) / 2. - mean) / std

  def _pool(self, x):
    if self.classifier == "token":
      x = x[:, 0]
    elif self.classifier == "gap":
      x = jnp.mean(x[:, 1:] if self._has_class_token else x, axis=1)
    elif self.classifier == "map":
      x = x if self.map_class_token or not self._has_class_token else x[:, 1:]
      x = MAPHead(num_heads=self.transformer["num_heads"], mlp_dim=self.transformer["mlp_dim"],
                  dtype=self.dtype, layer_norm_epsilon=self.layer_norm_epsilon,
                  gelu_approximate=self.gelu_approximate, name="MAPHead_0")(x)
    else:
      raise ValueError(f"Unknown classifier {self.classifier!r}; use 'token', 'gap' or 'map'.")
    if self.pooled_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype, name="fc_norm")(x)
    return x
