"""FLOPs of a train step: the global count of the unrolled model, whatever the layout, scan or devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_train import tiny_config
from vit_jax import flops
from vit_jax import metrics
from vit_jax import sharding
from vit_jax import steps


def lowered_step(config, num_devices: int) -> jax.stages.Lowered:
  """The train step as `train.py` lowers it, on a mesh of `num_devices`."""
  mesh = sharding.create_mesh(config.mesh, devices=jax.devices()[:num_devices])
  model = steps.create_model(config)
  tx = steps.create_optimizer(config, model)
  state = jax.eval_shape(lambda: steps.init_train_state(config, model, tx, jax.random.key(0)))
  state_sharding = sharding.tree_shardings(state, mesh, config.sharding)
  size = config.dataset.image_size
  batch = {"image": jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((config.batch_size, 10), jnp.float32)}
  step = jax.jit(steps.make_train_step(model, tx, config),
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)), donate_argnums=(0,))
  return step.lower(state, batch)


def compiled_step_flops(config, num_devices: int) -> float:
  """XLA's count for the compiled step on a mesh of `num_devices`, per device."""
  return metrics.compiled_flops(lowered_step(config, num_devices).compile())


@pytest.mark.parametrize("num_devices", [1, 8])
def test_global_flops_are_the_per_device_count_times_the_devices(num_devices):
  # FSDP: the optimizer update is split too, so no device repeats work that the others also do.
  config = tiny_config(sharding="fsdp", batch_size=64)
  per_device = compiled_step_flops(config, num_devices)
  np.testing.assert_allclose(flops.train_step_flops(config), per_device * num_devices, rtol=0.05)


def test_the_runs_own_lowering_counts_the_same_and_a_looped_one_is_not_used():
  config = tiny_config(sharding="fsdp", batch_size=64)
  traced = flops.train_step_flops(config)
  assert flops.train_step_flops(config, lowered=lowered_step(config, 8)) == traced
  looped = tiny_config(sharding="fsdp", batch_size=64)
  looped.model.scan = True
  looped_lowering = lowered_step(looped, 8)
  assert metrics.compiled_flops(looped_lowering) < 0.8 * traced
  np.testing.assert_allclose(flops.train_step_flops(looped, lowered=looped_lowering), traced,
                             rtol=0.05)


def test_scan_remat_and_accumulation_count_every_layer_and_micro_batch_once():
  config = tiny_config()
  looped = tiny_config()
  looped.model.update(scan=True, remat=True)
  looped.optimizer.accum_steps = 2
  # What the compiled looped step reports: each loop body once, so a too-small count.
  assert compiled_step_flops(looped, 1) < 0.8 * compiled_step_flops(config, 1)
  np.testing.assert_allclose(flops.train_step_flops(looped), flops.train_step_flops(config), rtol=0.05)


def test_mfu_divides_by_the_peak_of_all_devices():
  progress = metrics.Progress(first_step=0, total_steps=100, global_batch_size=8, step_flops=4e9,
                              peak_flops_per_device=1e9)
  # 10 steps of 4 GFLOP in 2 s = 20 GFLOP/s, of 8 devices x 1 GFLOP/s.
  assert progress.mfu(10, 2.0) == pytest.approx(20 / 8)
