"""Attention rollout, attention maps, Figure-7 panels: numerical properties, shapes, PNGs."""

import json
import pathlib

import chex
import ml_collections
import numpy as np
import pytest

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import visualize

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "official_vit" / "vit_token.npz"
BATCH, HEADS, LAYERS, GRID = 2, 3, 4, 3
TOKENS = 1 + GRID * GRID


def _fixture_model(**overrides):
  with np.load(FIXTURE, allow_pickle=False) as f:
    config, images = json.loads(str(f["__config__"])), f["__input__"]
  model_config = model_configs.get_model_config("ViT-Ti_16")
  model_config.update(ml_collections.ConfigDict(config["model"]), **overrides)
  params = checkpoint.params_from_flat(checkpoint.load_npz(FIXTURE), scan=model_config.scan)
  return models.create(model_config), params, images


def _layers(attention):
  """The same [B, heads, T, T] attention in every layer."""
  return [np.broadcast_to(attention, (BATCH, HEADS, TOKENS, TOKENS))] * LAYERS


def test_attention_weights_are_one_softmax_per_layer_and_head():
  model, params, images = _fixture_model()
  attentions = visualize.attention_weights(model, params, images)
  assert len(attentions) == 2
  chex.assert_shape(attentions, (3, 2, 65, 65))
  np.testing.assert_allclose(np.sum(attentions, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"scan": True}, {"fused_attention": True}])
def test_scanned_and_fused_models_give_the_same_attention_weights(overrides):
  model, params, images = _fixture_model()
  expected = visualize.attention_weights(model, params, images)
  model, params, images = _fixture_model(**overrides)
  np.testing.assert_allclose(visualize.attention_weights(model, params, images), expected, atol=1e-6)


def test_rollout_of_uniform_attention_is_uniform_over_patches():
  rollout = visualize.attention_rollout(_layers(np.full((TOKENS, TOKENS), 1 / TOKENS)))
  chex.assert_shape(rollout, (BATCH, TOKENS, TOKENS))
  np.testing.assert_allclose(rollout.sum(-1), 1.0)
  maps = visualize.class_token_map(rollout)
  chex.assert_shape(maps, (BATCH, GRID, GRID))
  np.testing.assert_allclose(maps, maps[0, 0, 0])
  assert maps[0, 0, 0] > 0


def test_rollout_of_identity_attention_leaves_each_token_on_itself():
  rollout = visualize.attention_rollout(_layers(np.eye(TOKENS)))
  np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(TOKENS), rollout.shape))
  np.testing.assert_allclose(visualize.class_token_map(rollout), 0.0)


def test_rollout_multiplies_layers_from_the_first_up():
  rng = np.random.default_rng(0)
  attentions = [rng.dirichlet(np.ones(TOKENS), (BATCH, HEADS, TOKENS)) for _ in range(2)]
  first, second = (visualize.attention_rollout([a]) for a in attentions)
  np.testing.assert_allclose(visualize.attention_rollout(attentions), second @ first)


def test_class_token_map_of_raw_attention_is_the_class_row_on_the_grid():
  attention = np.random.default_rng(1).dirichlet(np.ones(TOKENS), (BATCH, TOKENS))
  maps = visualize.class_token_map(attention)
  np.testing.assert_array_equal(maps[1, 2, 0], attention[1, 0, 1 + 2 * GRID])


def test_map_without_class_token_averages_the_queries():
  attention = np.random.default_rng(2).dirichlet(np.ones(GRID * GRID), (BATCH, GRID * GRID))
  np.testing.assert_allclose(visualize.class_token_map(attention).reshape(BATCH, -1),
                             attention.mean(axis=1))


def test_upsample_keeps_a_constant_map_constant():
  maps = visualize.upsample(np.full((BATCH, GRID, GRID), 0.25), 12, 15)
  chex.assert_shape(maps, (BATCH, 12, 15))
  np.testing.assert_allclose(maps, 0.25, rtol=1e-6)


def test_posemb_similarity_of_a_position_with_itself_is_one():
  _, params, _ = _fixture_model()
  similarity = visualize.posemb_similarity(params)
  chex.assert_shape(similarity, (8, 8, 8, 8))
  diagonal = np.einsum("ijij->ij", similarity)
  np.testing.assert_allclose(diagonal, 1.0, rtol=1e-6)
  np.testing.assert_allclose(similarity, similarity.transpose(2, 3, 0, 1), atol=1e-12)
  assert np.all(similarity <= 1 + 1e-9)


def test_posemb_similarity_needs_a_learned_embedding():
  with pytest.raises(ValueError, match="sincos2d"):
    visualize.posemb_similarity({"Transformer": {}})


def test_embedding_filters_find_the_dominant_pattern():
  rng = np.random.default_rng(3)
  pattern = rng.normal(size=(4, 4, 3))
  pattern /= np.linalg.norm(pattern)
  kernel = pattern[..., None] * rng.normal(size=32) + 0.01 * rng.normal(size=(4, 4, 3, 32))
  components = visualize.embedding_filters({"embedding": {"kernel": kernel}}, num_components=5)
  chex.assert_shape(components, (5, 4, 4, 3))
  flat = components.reshape(5, -1)
  np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-9)
  assert abs(np.sum(components[0] * pattern)) > 0.99


def test_embedding_filters_refuse_a_hybrid_stem():
  with pytest.raises(ValueError, match="not RGB"):
    visualize.embedding_filters({"embedding": {"kernel": np.zeros((1, 1, 1024, 32))}})


def test_a_head_that_attends_only_to_itself_has_mean_attention_distance_zero():
  attention = np.stack([np.eye(TOKENS), np.full((TOKENS, TOKENS), 1 / TOKENS), np.eye(TOKENS)])
  distances = visualize.mean_attention_distance(_layers(attention), image_size=48)
  chex.assert_shape(distances, (LAYERS, HEADS))
  np.testing.assert_allclose(distances[:, [0, 2]], 0.0)
  assert np.all(distances[:, 1] > 0)


def test_mean_attention_distance_is_in_pixels_between_patch_centres():
  # A 2x2 grid of 16-pixel patches, uniform attention: each query sees its neighbours at 0, 16, 16
  # and 16 * sqrt(2) pixels.
  attention = np.full((1, 1, 5, 5), 0.2)
  distances = visualize.mean_attention_distance([attention], image_size=32)
  np.testing.assert_allclose(distances, [[(32 + 16 * np.sqrt(2)) / 4]])


def test_mean_attention_distance_ignores_the_class_token():
  attention = np.eye(TOKENS)
  attention[1:] = 0.
  attention[1:, 0] = 0.9  # mostly the class token, the rest on itself
  attention[1:, 1:] += 0.1 * np.eye(GRID * GRID)
  distances = visualize.mean_attention_distance(_layers(attention), image_size=48)
  np.testing.assert_allclose(distances, 0.0)


def test_grid_must_be_square():
  with pytest.raises(ValueError, match="square"):
    visualize.class_token_map(np.zeros((1, 12, 12)))


def test_every_plot_writes_a_png(tmp_path):
  model, params, images = _fixture_model()
  attentions = visualize.attention_weights(model, params, images)
  maps = visualize.class_token_map(visualize.attention_rollout(attentions))
  plots = {
      "rollout": lambda p: visualize.plot_attention_maps(images, maps, ["a", "b", "c"], path=p),
      "posemb": lambda p: visualize.plot_posemb_similarity(visualize.posemb_similarity(params), path=p),
      "filters": lambda p: visualize.plot_embedding_filters(visualize.embedding_filters(params), path=p),
      "distance": lambda p: visualize.plot_attention_distance(
          visualize.mean_attention_distance(attentions, 32), 32, path=p),
  }
  for name, plot in plots.items():
    plot(tmp_path / f"{name}.png")
    data = (tmp_path / f"{name}.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000, name

