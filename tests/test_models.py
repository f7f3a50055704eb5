"""The model family: exact sizes of every published variant, heads, knobs that must not change results."""

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import models
from vit_jax.models import vit

# Parameter counts of the official repository (1000 classes, 224x224).
OFFICIAL_PARAM_COUNTS = {
    "ViT-Ti_16": 5_717_416, "ViT-S_16": 22_050_664, "ViT-B_16": 86_567_656, "ViT-L_16": 304_326_632,
    "ViT-H_14": 632_045_800, "ViT-B_8": 86_576_872, "ViT-S_32": 22_878_952, "ViT-B_32": 88_224_232,
    "ViT-L_32": 306_535_400, "R+ViT-Ti_16": 6_337_704, "R50+ViT-B_16": 98_659_112,
    "R26+ViT-B_32": 101_383_976, "R26+ViT-S_32": 36_431_912, "R50+ViT-L_32": 328_994_856,
}
IMAGES = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1., maxval=1.)


def init(model, images=IMAGES):
  return model.init(jax.random.key(0), images, train=False)["params"]


def randomize(params, seed=2):
  """Non-zero values everywhere (the zero-initialised head would hide most mistakes)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_model_names_cover_every_official_count():
  assert set(model_configs.MODEL_NAMES) == set(OFFICIAL_PARAM_COUNTS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAM_COUNTS))
def test_parameter_count_matches_official(name):
  model = models.create(model_configs.get_model_config(name), num_classes=1000)
  shapes = jax.eval_shape(lambda: init(model, jnp.zeros((1, 224, 224, 3))))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == OFFICIAL_PARAM_COUNTS[name]


def test_unknown_model_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="ViT-B_16"):
    model_configs.get_model_config("ViT-X_16")


def test_a_model_name_spelled_like_a_published_one_must_be_one(tiny_model_config):
  tiny_model_config.model_name = "ViT-Q_99"
  with pytest.raises(ValueError, match=r"Unknown model 'ViT-Q_99' \(config.model.model_name\); known models: "
                                       r"ViT-Ti_16, .*R50\+ViT-L_32"):
    models.create(tiny_model_config)
  for label in ("ViT-digits", "R50+ViT-B_16"):
    tiny_model_config.model_name = label
    assert models.create(tiny_model_config).hidden_size == 32


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_heads_give_logits_of_num_classes(tiny_model_config, classifier):
  tiny_model_config.classifier = classifier
  model = models.create(tiny_model_config)
  logits = model.apply({"params": randomize(init(model))}, IMAGES)
  chex.assert_shape(logits, (2, 10))
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite(logits)


def test_num_classes_zero_returns_pre_logits_features(tiny_model_config):
  tiny_model_config.representation_size = 16
  model = models.create(tiny_model_config, num_classes=0)
  params = init(model)
  assert "head" not in params and "pre_logits" in params
  features = model.apply({"params": params}, IMAGES)
  chex.assert_shape(features, (2, 16))
  assert np.all(np.abs(features) <= 1.)  # tanh


def test_head_is_zero_initialised(tiny_model_config):
  model = models.create(tiny_model_config)
  np.testing.assert_array_equal(model.apply({"params": init(model)}, IMAGES), 0.)


def test_head_bias_starts_at_head_bias_init(tiny_model_config):
  """big_vision's init_head_bias: -10 for sigmoid pretraining, so every class starts unlikely."""
  tiny_model_config.head_bias_init = -10.0
  model = models.create(tiny_model_config)
  params = init(model)
  np.testing.assert_array_equal(params["head"]["bias"], np.full(10, -10.0))
  np.testing.assert_array_equal(model.apply({"params": params}, IMAGES), -10.0)


def test_map_head_without_the_class_token_pools_the_patch_tokens_only(tiny_model_config):
  tiny_model_config.update(classifier="map", class_token=True)
  params = randomize(init(models.create(tiny_model_config)))
  with_token = models.create(tiny_model_config, num_classes=0).apply({"params": params}, IMAGES)
  without = models.create(tiny_model_config, num_classes=0, map_class_token=False)
  features, state = without.apply({"params": params}, IMAGES, capture_intermediates=True)
  tokens = state["intermediates"]["Transformer"]["__call__"][0]
  map_head = vit.MAPHead(num_heads=2, mlp_dim=64)
  np.testing.assert_allclose(features, map_head.apply({"params": params["MAPHead_0"]}, tokens[:, 1:]),
                             atol=1e-6)
  assert np.abs(features - with_token).max() > 1e-3


def test_hybrid_feeds_resnet_features_to_patch_embedding(tiny_model_config):
  tiny_model_config.resnet = dict(num_layers=(1,), width_factor=0.5)
  tiny_model_config.patches.size = (2, 2)
  model = models.create(tiny_model_config)
  params = init(model)
  # Stem /4, then 2x2 patches: a 4x4 grid of tokens from 32x32 images.
  chex.assert_shape(params["Transformer"]["posembed_input"]["pos_embedding"], (1, 17, 32))
  chex.assert_shape(params["block1"]["unit1"]["conv_proj"]["kernel"], (1, 1, 32, 128))
  chex.assert_shape(params["embedding"]["kernel"], (2, 2, 128, 32))
  logits = model.apply({"params": randomize(params)}, IMAGES)
  chex.assert_shape(logits, (2, 10))
  chex.assert_tree_all_finite(logits)


def test_sincos_posemb_has_no_position_parameters(tiny_model_config):
  tiny_model_config.posemb = "sincos2d"
  model = models.create(tiny_model_config)
  params = init(model)
  assert "posembed_input" not in params["Transformer"]
  chex.assert_shape(model.apply({"params": randomize(params)}, IMAGES), (2, 10))


def test_scan_matches_unrolled_for_the_same_weights(tiny_model_config):
  unrolled = models.create(tiny_model_config)
  params = randomize(init(unrolled))
  scanned_params = checkpoint.params_from_flat(checkpoint.flat_from_params(params), scan=True)
  tiny_model_config.scan = True
  scanned = models.create(tiny_model_config)
  chex.assert_trees_all_equal_shapes(scanned_params, init(scanned))
  np.testing.assert_allclose(scanned.apply({"params": scanned_params}, IMAGES),
                             unrolled.apply({"params": params}, IMAGES), atol=1e-5, rtol=0)


@pytest.mark.parametrize("scan, policy", [(False, "nothing_saveable"), (True, "nothing_saveable"),
                                           (False, "dots_saveable")])
def test_remat_changes_nothing_numerically(tiny_model_config, scan, policy):
  tiny_model_config.scan = scan
  plain = models.create(tiny_model_config)
  params = randomize(init(plain))
  tiny_model_config.update(remat=True, remat_policy=policy)
  remat = models.create(tiny_model_config)

  def grads(model):
    loss = lambda p: jnp.sum(model.apply({"params": p}, IMAGES, train=True,
                                         rngs={"dropout": jax.random.key(3)})**2)
    return jax.value_and_grad(loss)(params)

  chex.assert_trees_all_close(grads(remat), grads(plain), atol=1e-6, rtol=1e-6)


def test_a_remat_policy_that_saves_the_matmuls_recomputes_fewer_of_them(tiny_model_config):
  params = init(models.create(tiny_model_config))

  def dots_in_gradient(policy):
    tiny_model_config.update(remat=True, remat_policy=policy)
    model = models.create(tiny_model_config)
    loss = lambda p: jnp.sum(model.apply({"params": p}, IMAGES, train=True)**2)
    return str(jax.make_jaxpr(jax.grad(loss))(params)).count("dot_general")

  assert dots_in_gradient("dots_saveable") < dots_in_gradient("nothing_saveable")


def test_an_unknown_remat_policy_names_the_valid_ones(tiny_model_config):
  tiny_model_config.update(remat=True, remat_policy="save_all")
  model = models.create(tiny_model_config)
  with pytest.raises(ValueError, match="remat_policy='save_all'.*dots_saveable"):
    init(model)


def test_bfloat16_compute_stays_close_to_float32(tiny_model_config):
  model = models.create(tiny_model_config)
  params = randomize(init(model))
  tiny_model_config.dtype = "bfloat16"
  bf16 = models.create(tiny_model_config)
  chex.assert_trees_all_equal_dtypes(init(bf16), params)  # parameters stay float32
  reference = model.apply({"params": params}, IMAGES)
  out = bf16.apply({"params": params}, IMAGES)
  chex.assert_type(out, jnp.float32)
  # bf16 keeps 8 bits of mantissa: relative error ~1e-2 of the logit scale after two blocks.
  np.testing.assert_allclose(out, reference, atol=0.05 * np.abs(reference).max(), rtol=0)


def test_fused_attention_matches_explicit_softmax(tiny_model_config):
  model = models.create(tiny_model_config)
  params = randomize(init(model))
  fused = models.create(tiny_model_config, fused_attention=True)
  np.testing.assert_allclose(fused.apply({"params": params}, IMAGES),
                             model.apply({"params": params}, IMAGES), atol=1e-5, rtol=0)


def test_fused_attention_refuses_attention_dropout(tiny_model_config):
  tiny_model_config.transformer.attention_dropout_rate = 0.1
  with pytest.raises(ValueError, match="attention_dropout_rate"):
    models.create(tiny_model_config, fused_attention=True)


def test_attention_weights_are_captured_per_block(tiny_model_config):
  model = models.create(tiny_model_config)
  _, state = model.apply({"params": randomize(init(model))}, IMAGES, mutable=["intermediates"])
  weights = state["intermediates"]["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_1"][
      "attention_weights"][0]
  chex.assert_shape(weights, (2, 2, 65, 65))  # batch, heads, queries, keys
  np.testing.assert_allclose(weights.sum(-1), 1., atol=1e-5)


def test_stochastic_depth_is_random_in_training_only(tiny_model_config):
  tiny_model_config.stochastic_depth = 0.5
  model = models.create(tiny_model_config)
  params = randomize(init(model))
  train = lambda seed: model.apply({"params": params}, IMAGES, train=True,
                                   rngs={"dropout": jax.random.key(seed)})
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(model.apply({"params": params}, IMAGES),
                                model.apply({"params": params}, IMAGES))


def test_image_not_multiple_of_patch_size_raises(tiny_model_config):
  model = models.create(tiny_model_config)
  with pytest.raises(ValueError, match=r"not a multiple of the patch size \(4, 4\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 30, 30, 3)), train=False)


def test_unknown_config_key_is_named(tiny_model_config):
  with pytest.raises(ValueError, match="hiden_size"):
    models.create(tiny_model_config, hiden_size=3)


def test_unknown_dtype_is_refused(tiny_model_config):
  tiny_model_config.dtype = "float16x"
  with pytest.raises(ValueError, match="bfloat16"):
    models.create(tiny_model_config)


def test_pixel_normalisation_maps_minus_one_one_to_mean_std(tiny_model_config):
  model = models.create(tiny_model_config, pixel_mean=(0.485, 0.456, 0.406),
                        pixel_std=(0.229, 0.224, 0.225))
  plain = models.create(tiny_model_config)
  params = randomize(init(plain))
  pixels = (np.asarray(IMAGES) + 1.) / 2.
  normalised = (pixels - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(model.apply({"params": params}, IMAGES),
                             plain.apply({"params": params}, jnp.asarray(normalised, jnp.float32)),
                             atol=1e-5, rtol=0)


def test_parameter_names_follow_the_official_checkpoints(tiny_model_config):
  model = models.create(tiny_model_config)
  names = set(flax.traverse_util.flatten_dict(init(model), sep="/"))
  assert {"cls", "embedding/kernel", "Transformer/posembed_input/pos_embedding",
          "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
          "Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel",
          "Transformer/encoderblock_1/LayerNorm_2/scale", "Transformer/encoder_norm/bias",
          "head/kernel"} <= names


def test_gap_with_class_token_averages_patch_tokens_only(tiny_model_config):
  tiny_model_config.classifier = "gap"
  tiny_model_config.class_token = True
  model = models.create(tiny_model_config, num_classes=0)
  params = randomize(init(model))
  assert params["cls"].shape == (1, 1, 32)
  _, state = model.apply({"params": params}, IMAGES, capture_intermediates=True)
  tokens = state["intermediates"]["Transformer"]["__call__"][0]
  chex.assert_shape(tokens, (2, 65, 32))
  np.testing.assert_allclose(model.apply({"params": params}, IMAGES), tokens[:, 1:].mean(axis=1),
                             atol=1e-6)


def test_split_heads_attention_matches_flax_attention_and_sows_the_same_weights():
  """The CPU attention kept for speed (benchmarks/RESULTS.md) is flax's attention, head by head."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 12))
  outputs = {}
  for name, fn in (("flax", nn.dot_product_attention), ("split", vit.split_heads_attention)):
    mha = nn.MultiHeadDotProductAttention(num_heads=3, attention_fn=fn)
    params = mha.init(jax.random.key(1), x, x)
    outputs[name] = mha.apply(params, x, x, sow_weights=True, mutable=["intermediates"])
  (flax_out, flax_state), (split_out, split_state) = outputs["flax"], outputs["split"]
  np.testing.assert_allclose(split_out, flax_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(split_state["intermediates"]["attention_weights"][0],
                             flax_state["intermediates"]["attention_weights"][0], rtol=1e-5, atol=1e-6)
