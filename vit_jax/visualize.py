"""What the model sees: the paper's Figure 6 (attention rollout) and Figure 7 (embedding filters,
position-embedding similarity, mean attention distance).

Each analysis returns numpy arrays; each `plot_*` draws one with matplotlib and, given `path`, writes a
PNG. Figures are built without pyplot, so importing this module changes no matplotlib backend (in a
notebook, `%matplotlib inline` displays the returned figures). Attention weights come from the model
itself: every attention block sows its softmax weights into the 'intermediates' collection.

  attentions = visualize.attention_weights(model, params, images)
  maps = visualize.class_token_map(visualize.attention_rollout(attentions))
  visualize.plot_attention_maps(images, maps, path="rollout.png")
"""

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

Params = Any
_ATTENTION = "MultiHeadDotProductAttention_1"


def attention_weights(model: nn.Module, params: Params, images: np.ndarray | jax.Array) -> list[np.ndarray]:
  """Per encoder block, the attention weights [B, heads, T, T] (rows: queries, summing to 1).

  Fused attention never forms the weights, so the model runs unfused here (same parameters, same
  outputs). Scanned models give the same list as unscanned ones.
  """
  model = model.clone(fused_attention=False)
  _, state = model.apply({"params": params}, images, train=False, mutable=["intermediates"])
  blocks = state["intermediates"]["Transformer"]
  if "encoderblock" in blocks:  # nn.scan stacks the layers on a leading axis
    return list(np.asarray(blocks["encoderblock"][_ATTENTION]["attention_weights"][0]))
  return [np.asarray(blocks[f"encoderblock_{i}"][_ATTENTION]["attention_weights"][0])
          for i in range(model.transformer["num_layers"])]


def attention_rollout(attentions: Sequence[np.ndarray]) -> np.ndarray:
  """How much each output token draws on each input token through all layers: [B, T, T].

  Abnar & Zuidema (2020), as in the ViT paper's Figure 6: average the heads, add the identity for the
  residual connection, renormalise the rows, and multiply the layers' matrices from the first up.
  """
  rollout = None
  for attention in attentions:
    layer = np.asarray(attention, np.float64).mean(axis=1)
    layer = layer + np.eye(layer.shape[-1])
    layer = layer / layer.sum(axis=-1, keepdims=True)
    rollout = layer if rollout is None else layer @ rollout
  return rollout


def class_token_map(attention: np.ndarray) -> np.ndarray:
  """[B, T, T] attention (a rollout, or one layer's `attentions[l][:, head]`) -> [B, grid, grid].

  The class token's row over the patches; a model without a class token (gap, map) has no such row, so
  the map is the attention the patches receive, averaged over all queries.
  """
  prefix, side = _token_grid(attention.shape[-1])
  rows = attention[:, 0] if prefix else attention.mean(axis=1)
  return np.asarray(rows[:, prefix:]).reshape(-1, side, side)


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
  """[B, grid, grid] -> [B, height, width], bilinear: a patch map laid over its image."""
  return np.asarray(jax.image.resize(np.asarray(maps, np.float32), (len(maps), height, width), "bilinear"))


def posemb_similarity(params: Params) -> np.ndarray:
  """Cosine similarity of the learned position embeddings: [grid, grid, grid, grid], where
  `[i, j]` is the map of position (i, j) against every position (Figure 7, centre)."""
  try:
    posemb = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"], np.float64)[0]
  except KeyError as e:
    raise ValueError("These params have no learned position embedding (Transformer/posembed_input/"
                     "pos_embedding); a model with posemb='sincos2d' has a fixed one.") from e
  prefix, side = _token_grid(len(posemb))
  posemb = posemb[prefix:] / np.linalg.norm(posemb[prefix:], axis=-1, keepdims=True)
  return (posemb @ posemb.T).reshape(side, side, side, side)


def embedding_filters(params: Params, num_components: int = 28) -> np.ndarray:
  """Principal components of the RGB patch-embedding filters: [k, patch_h, patch_w, 3], the
  directions in pixel space along which the filters vary most, strongest first (Figure 7, left)."""
  kernel = np.asarray(params["embedding"]["kernel"], np.float64)  # [patch_h, patch_w, C, hidden]
  if kernel.shape[2] != 3:
    raise ValueError(f"The patch embedding sees {kernel.shape[2]} channels, not RGB pixels (a hybrid "
                     "model embeds ResNet features): its filters are not images.")
  filters = kernel.reshape(-1, kernel.shape[-1]).T  # one row per filter
  _, _, components = np.linalg.svd(filters - filters.mean(axis=0), full_matrices=False)
  return components[:num_components].reshape(-1, *kernel.shape[:3])


def mean_attention_distance(attentions: Sequence[np.ndarray], image_size: int) -> np.ndarray:
  """[layers, heads]: the distance in pixels between query and key patch centres, weighted by attention
  and averaged over queries and images: the "receptive field size" of Figure 7, right.

  The class token is left out and each query's weights are renormalised over the patches, so a head is
  not called local merely because it also attends to the class token.
  """
  prefix, side = _token_grid(np.shape(attentions[0])[-1])
  centres = np.stack(np.divmod(np.arange(side * side), side), axis=-1) * (image_size / side)
  distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)  # [patches, patches]
  result = []
  for attention in attentions:
    weights = np.asarray(attention, np.float64)[..., prefix:, prefix:]
    weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), 1e-30)
    result.append((weights * distance).sum(axis=-1).mean(axis=(0, 2)))
  return np.stack(result)


def _token_grid(num_tokens: int) -> tuple[int, int]:
  """(class tokens in front, side of the square patch grid) of a sequence of `num_tokens`."""
  side = math.isqrt(num_tokens)
  prefix = num_tokens - side * side
  if prefix > 1:
    raise ValueError(f"{num_tokens} tokens are not a square patch grid with at most one class token.")
  return prefix, side


def _display(images: np.ndarray) -> np.ndarray:
  """Model inputs in [-1, 1] -> [0, 1] for imshow."""
  return np.clip((np.asarray(images, np.float32) + 1) / 2, 0, 1)


def _finish(fig: Figure, path: str | pathlib.Path | None) -> Figure:
  if path is not None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
  return fig


def plot_attention_maps(images: np.ndarray, maps: np.ndarray, titles: Sequence[str] | None = None,
                        path: str | pathlib.Path | None = None) -> Figure:
  """Each image ([-1, 1], [B, H, W, 3]) above its map ([B, grid, grid]) laid over it, as in Figure 6."""
  images = _display(images)
  height, width = images.shape[1:3]
  maps = upsample(maps, height, width)
  maps = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-30)
  fig = Figure(figsize=(2.5 * len(images), 5))
  axes = fig.subplots(2, len(images), squeeze=False)
  for i, (image, attention) in enumerate(zip(images, maps)):
    axes[0, i].imshow(image)
    axes[1, i].imshow(image)
    axes[1, i].imshow(attention, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    if titles is not None:
      axes[0, i].set_title(titles[i], fontsize=9)
  for ax in axes.flat:
    ax.axis("off")
  return _finish(fig, path)


def plot_posemb_similarity(similarity: np.ndarray, path: str | pathlib.Path | None = None) -> Figure:
  """One small map per position, laid out on the grid (Figure 7, centre)."""
  side = similarity.shape[0]
  # One mosaic with blank gutters draws fast even for a 14x14 grid of 14x14 maps.
  mosaic = np.full(((side + 1) * side - 1,) * 2, np.nan)
  for i in range(side):
    for j in range(side):
      mosaic[i * (side + 1):i * (side + 1) + side, j * (side + 1):j * (side + 1) + side] = similarity[i, j]
  fig = Figure(figsize=(6, 5))
  ax = fig.subplots()
  image = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1)
  ticks = np.arange(side) * (side + 1) + (side - 1) / 2
  ax.set_xticks(ticks, [str(j + 1) for j in range(side)])
  ax.set_yticks(ticks, [str(i + 1) for i in range(side)])
  ax.set_xlabel("Input patch column")
  ax.set_ylabel("Input patch row")
  ax.set_title("Position embedding similarity")
  fig.colorbar(image, ax=ax, label="Cosine similarity")
  return _finish(fig, path)


def plot_embedding_filters(components: np.ndarray, path: str | pathlib.Path | None = None) -> Figure:
  """The principal components as RGB patches, each stretched to [0, 1] (Figure 7, left)."""
  cols = min(7, len(components))
  rows = math.ceil(len(components) / cols)
  fig = Figure(figsize=(1.2 * cols, 1.2 * rows + 0.4))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, component in zip(axes.flat, components):
    low, high = component.min(), component.max()
    ax.imshow((component - low) / max(high - low, 1e-30), interpolation="nearest")
  fig.suptitle("RGB embedding filters (first principal components)")
  return _finish(fig, path)


def plot_attention_distance(distances: np.ndarray, image_size: int | None = None,
                            path: str | pathlib.Path | None = None) -> Figure:
  """Each head's mean attention distance against its depth (Figure 7, right)."""
  num_layers, num_heads = distances.shape
  fig = Figure(figsize=(5, 4))
  ax = fig.subplots()
  for head in range(num_heads):
    ax.scatter(np.arange(1, num_layers + 1), distances[:, head], s=16, label=f"Head {head + 1}")
  ax.set_xlabel("Network depth (layer)")
  ax.set_ylabel("Mean attention distance (pixels)")
  ax.set_xticks(np.arange(1, num_layers + 1))
  ax.set_ylim(0, image_size if image_size else None)
  if num_heads <= 16:
    ax.legend(fontsize=7, ncol=2)
  return _finish(fig, path)
