"""EMA of the params: timm ModelEmaV3's decay schedule, the update rule, and the train-loop wiring."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_jax import ema
from vit_jax import predict
from vit_jax import sharding
from vit_jax import train
from vit_jax import workdir as workdir_lib
from tests.test_train import random_batches, tiny_config


def ema_config(decay, warmup_power=0.0):
  return ml_collections.ConfigDict(dict(decay=decay, warmup_power=warmup_power))


def test_decay_follows_timm_model_ema_v3():
  # timm: step' = max(0, n - 1); 0 at step' = 0; warm-up 1 - (1 + step')^-power, capped at decay.
  updates = jnp.arange(1, 6)
  np.testing.assert_allclose(ema.decay_at(updates, 0.9, 0.0), [0, .9, .9, .9, .9])
  expected = [0.] + [min(0.6, 1 - (1 + s) ** -(2 / 3)) for s in range(1, 5)]
  np.testing.assert_allclose(ema.decay_at(updates, 0.6, 2 / 3), expected, rtol=1e-6)


def test_update_is_the_hand_computed_average():
  params = [{"w": jnp.array([1., 2.])}, {"w": jnp.array([3., 6.])}, {"w": jnp.array([5., 0.])}]
  average = params[0]
  for n, p in enumerate(params, start=1):
    average = ema.update(average, p, jnp.asarray(n), ema_config(0.5))
  # n=1 copies params[0]; n=2: .5 * [1, 2] + .5 * [3, 6] = [2, 4]; n=3: .5 * [2, 4] + .5 * [5, 0].
  np.testing.assert_allclose(average["w"], [3.5, 2.])


def test_update_keeps_dtypes():
  out = ema.update({"w": jnp.ones(2, jnp.bfloat16)}, {"w": jnp.zeros(2, jnp.bfloat16)}, jnp.asarray(2),
                   ema_config(0.5))
  assert out["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize("key, value", [("decay", 1.0), ("decay", -0.1), ("warmup_power", -1.0)])
def test_bad_ema_config_is_reported(key, value):
  config = tiny_config()
  config.ema[key] = value
  with pytest.raises(ValueError, match=f"config.ema.{key}"):
    ema.enabled(config)


def test_train_step_keeps_the_average_of_the_params():
  config = tiny_config()
  config.ema.decay = 0.5
  mesh = sharding.create_mesh(config.mesh)
  model = train.create_model(config)
  tx = train.create_optimizer(config, model)
  state, _ = train.create_train_state(config, model, tx, mesh)
  step = jax.jit(train.make_train_step(model, tx, config))
  history = []
  for batch in random_batches(config, 3):
    state, _ = step(state, batch)
    history.append(state.params)
  # n=1: params_1; n=2: (p1 + p2) / 2; n=3: (p1 + p2) / 4 + p3 / 2.
  expected = jax.tree.map(lambda a, b, c: (a + b) / 4 + c / 2, *history)
  jax.tree.map(lambda e, x: np.testing.assert_allclose(e, x, rtol=1e-5, atol=1e-7),
               jax.device_get(state.ema_params), jax.device_get(expected))


def test_no_ema_leaves_the_state_as_before():
  config = tiny_config()
  model = train.create_model(config)
  state = jax.eval_shape(lambda: train.init_train_state(config, model, train.create_optimizer(config, model),
                                                        jax.random.key(0)))
  assert state.ema_params is None


def test_run_evaluates_saves_and_serves_the_ema(tmp_path):
  config = tiny_config()
  config.ema.decay = 0.9
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert {"ema_accuracy", "ema_loss", "accuracy"} <= set(results)
  _, raw = workdir_lib.load_params(tmp_path)
  _, averaged = workdir_lib.load_params(tmp_path, use_ema=True)
  jax.tree.map(np.testing.assert_array_equal, averaged, jax.device_get(state.ema_params))
  assert not np.allclose(raw["head"]["kernel"], averaged["head"]["kernel"])
  _, params, _ = predict.load_workdir(tmp_path, use_ema=True)
  jax.tree.map(np.testing.assert_array_equal, params, averaged)

  finetune = tiny_config(init_checkpoint=str(tmp_path), init_use_ema=True, init_keep_head=True)
  started = train.load_init_params(finetune, averaged)
  jax.tree.map(np.testing.assert_array_equal, started, averaged)


def test_asking_for_a_missing_ema_is_reported(tmp_path):
  train.train_and_evaluate(tiny_config(total_steps=3), str(tmp_path))
  with pytest.raises(ValueError, match="no EMA params.*ema.decay=0"):
    workdir_lib.load_params(tmp_path, use_ema=True)


def test_predict_use_ema_needs_a_workdir(capsys):
  with pytest.raises(SystemExit):
    predict.main(["--model", "ViT-B_16", "--checkpoint", "x.npz", "--use_ema", "image.png"])
  assert "--use_ema needs --workdir" in capsys.readouterr().err
