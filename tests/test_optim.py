"""Schedules and optimizers from `config.optimizer`, checked against closed forms."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from vit_jax import optim


def _opt_config(**overrides) -> ml_collections.ConfigDict:
  config = common.get_config().optimizer
  config.lock()  # A typo in an override fails the test instead of adding a key.
  config.update(overrides)
  return config


def _params():
  return {
      "Transformer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))},
      "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))},
  }


def _update(tx, grads_seq, params):
  """Applies each gradient tree in turn under jit; returns the final params and the last updates."""
  state = tx.init(params)
  step = jax.jit(tx.update)
  for grads in grads_seq:
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, updates


def _sgd(**overrides):
  settings = dict(name="sgd", learning_rate=1.0, schedule="constant", warmup_steps=0, momentum=0.0,
                  weight_decay=0.0, grad_clip_norm=0.0)
  return _opt_config(**{**settings, **overrides})


@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
def test_schedule_warms_up_linearly_from_zero(name):
  schedule = optim.learning_rate_schedule(
      _opt_config(schedule=name, learning_rate=0.4, warmup_steps=100), total_steps=1000)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(50), 0.2, rtol=1e-6)
  np.testing.assert_allclose(schedule(100), 0.4, rtol=1e-6)


@pytest.mark.parametrize("name,midpoint", [("cosine", 0.25), ("linear", 0.25), ("constant", 0.4)])
def test_schedule_decays_to_end_learning_rate(name, midpoint):
  config = _opt_config(schedule=name, learning_rate=0.4, end_learning_rate=0.1, warmup_steps=100)
  schedule = optim.learning_rate_schedule(config, total_steps=1100)
  np.testing.assert_allclose(schedule(600), midpoint, rtol=1e-6)
  end = 0.4 if name == "constant" else 0.1
  np.testing.assert_allclose(schedule(1100), end, rtol=1e-6)
  np.testing.assert_allclose(schedule(5000), end, rtol=1e-6)


def test_cosine_schedule_matches_closed_form():
  schedule = optim.learning_rate_schedule(
      _opt_config(schedule="cosine", learning_rate=1.0, end_learning_rate=0.0, warmup_steps=10),
      total_steps=110)
  expected = 0.5 * (1 + math.cos(math.pi * 25 / 100))
  np.testing.assert_allclose(schedule(35), expected, rtol=1e-6)


def test_schedule_without_warmup_starts_at_peak():
  schedule = optim.learning_rate_schedule(_opt_config(warmup_steps=0, learning_rate=0.3), 100)
  np.testing.assert_allclose(schedule(0), 0.3, rtol=1e-6)


def test_warmup_not_shorter_than_training_raises():
  with pytest.raises(ValueError, match="warmup_steps=100 must be smaller than total_steps=100"):
    optim.learning_rate_schedule(_opt_config(warmup_steps=100), total_steps=100)


def test_unknown_schedule_raises_with_valid_choices():
  with pytest.raises(ValueError, match=r"schedule='step'.*\['cosine', 'linear', 'constant'\]"):
    optim.learning_rate_schedule(_opt_config(schedule="step"), total_steps=1000)


def test_unknown_optimizer_raises_with_valid_choices():
  with pytest.raises(ValueError, match=r"name='lamb'.*\['adamw', 'adam', 'sgd'\]"):
    optim.create_optimizer(_opt_config(name="lamb"), 1000, _params())


@pytest.mark.parametrize("key,value", [("accum_steps", 0), ("grad_clip_norm", -1.0),
                                       ("backbone_lr_multiplier", -0.5), ("momentum", 1.0)])
def test_invalid_setting_raises_naming_the_key(key, value):
  with pytest.raises(ValueError, match=f"optimizer.{key}="):
    optim.create_optimizer(_opt_config(**{key: value}), 1000, _params())


def test_adam_with_weight_decay_raises():
  with pytest.raises(ValueError, match="use 'adamw'"):
    optim.create_optimizer(_opt_config(name="adam", weight_decay=0.1), 1000, _params())


def test_default_config_builds_a_jittable_optimizer():
  params = _params()
  tx = optim.create_optimizer(_opt_config(), 1000, params)
  new_params, _ = _update(tx, [jax.tree.map(jnp.ones_like, params)], params)
  chex.assert_trees_all_equal_shapes_and_dtypes(new_params, params)
  chex.assert_tree_all_finite(new_params)


def test_clipping_bounds_the_update_norm():
  params = _params()
  tx = optim.create_optimizer(_sgd(grad_clip_norm=1.0), 100, params)
  _, updates = _update(tx, [jax.tree.map(lambda p: jnp.full_like(p, 1e6), params)], params)
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-5)


def test_zero_clip_norm_disables_clipping():
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e3), params)
  _, updates = _update(optim.create_optimizer(_sgd(), 100, params), [grads], params)
  chex.assert_trees_all_close(updates, jax.tree.map(jnp.negative, grads))


def test_weight_decay_shrinks_kernels_but_not_biases():
  params = _params()
  config = _opt_config(name="adamw", learning_rate=0.1, weight_decay=0.5, schedule="constant",
                       warmup_steps=0)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  new_params, _ = _update(optim.create_optimizer(config, 100, params), [zero_grads], params)
  for part in ("Transformer", "head"):
    chex.assert_trees_all_close(new_params[part]["kernel"], params[part]["kernel"] * (1 - 0.1 * 0.5))
    chex.assert_trees_all_equal(new_params[part]["bias"], params[part]["bias"])


def test_frozen_backbone_gets_exactly_zero_updates_while_head_moves():
  params = _params()
  config = _opt_config(backbone_lr_multiplier=0.0, warmup_steps=0, schedule="constant")
  tx = optim.create_optimizer(config, 100, params)
  new_params, _ = _update(tx, [jax.tree.map(jnp.ones_like, params)] * 2, params)
  chex.assert_trees_all_equal(new_params["Transformer"], params["Transformer"])
  assert not np.allclose(new_params["head"]["kernel"], params["head"]["kernel"])


def test_frozen_backbone_keeps_no_optimizer_state():
  params = _params()
  tx = optim.create_optimizer(_opt_config(backbone_lr_multiplier=0.0), 1000, params)
  state_sizes = [leaf.size for leaf in jax.tree.leaves(tx.init(params)) if leaf.ndim > 0]
  head_size = sum(leaf.size for leaf in jax.tree.leaves(params["head"]))
  assert sum(state_sizes) == 2 * head_size  # Adam's two moments of the head, nothing else.


def test_frozen_backbone_gradients_do_not_shrink_the_clipped_head_update():
  params = _params()
  grads = {"Transformer": jax.tree.map(lambda p: jnp.full_like(p, 1e6), params["Transformer"]),
           "head": jax.tree.map(lambda p: jnp.full_like(p, 0.1), params["head"])}
  tx = optim.create_optimizer(_sgd(backbone_lr_multiplier=0.0, grad_clip_norm=1.0), 100, params)
  _, updates = _update(tx, [grads], params)
  chex.assert_trees_all_close(updates["head"], jax.tree.map(jnp.negative, grads["head"]))


def test_backbone_multiplier_scales_the_backbone_learning_rate():
  params = _params()
  tx = optim.create_optimizer(_sgd(backbone_lr_multiplier=0.25), 100, params)
  _, updates = _update(tx, [jax.tree.map(jnp.ones_like, params)], params)
  chex.assert_trees_all_close(updates["head"], jax.tree.map(lambda p: -jnp.ones_like(p),
                                                            params["head"]))
  chex.assert_trees_all_close(updates["Transformer"],
                              jax.tree.map(lambda p: jnp.full_like(p, -0.25), params["Transformer"]))


def test_backbone_multiplier_without_head_raises():
  with pytest.raises(ValueError, match="top-level 'head' key; got top-level keys \\['encoder'\\]"):
    optim.create_optimizer(_opt_config(backbone_lr_multiplier=0.0), 1000, {"encoder": jnp.ones(2)})


def test_sgd_momentum_matches_hand_computed_trajectory():
  params = {"w": jnp.array([1.0, -2.0])}
  config = _sgd(learning_rate=0.1, momentum=0.9)
  grads = [{"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -1.0])}]
  new_params, _ = _update(optim.create_optimizer(config, 100, params), grads, params)
  # m1 = g1; w1 = w0 - lr * m1.  m2 = g2 + 0.9 * m1; w2 = w1 - lr * m2.
  m1 = np.array([1.0, 2.0])
  m2 = np.array([3.0, -1.0]) + 0.9 * m1
  expected = np.array([1.0, -2.0]) - 0.1 * m1 - 0.1 * m2
  np.testing.assert_allclose(new_params["w"], expected, rtol=1e-6)


def test_bfloat16_first_moments_halve_their_memory_and_keep_the_second_in_float32():
  params = _params()
  state = optim.create_optimizer(_opt_config(mu_dtype="bfloat16"), 1000, params).init(params)
  adam = next(s for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu"))
  chex.assert_trees_all_equal_dtypes(adam.mu, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
  chex.assert_trees_all_equal_dtypes(adam.nu, params)


def test_an_unknown_mu_dtype_names_the_choices():
  with pytest.raises(ValueError, match="optimizer.mu_dtype='float16'.*bfloat16"):
    optim.create_optimizer(_opt_config(mu_dtype="float16"), 1000, _params())
