"""Mesh layout (one slice and several) and tensor-parallel parameter rules from the config."""

import types

import chex
import jax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from configs import common
from tests.test_train import random_batches, run_steps, tiny_config
from vit_jax import sharding


def fake_devices(num_slices: int, per_slice: int) -> list[types.SimpleNamespace]:
  """What mesh_utils reads of a multi-slice TPU device, listed in the order jax.devices() mixes them."""
  devices = [types.SimpleNamespace(id=i, slice_index=i % num_slices, process_index=i // 4,
                                   platform="cpu", device_kind="fake")
             for i in range(num_slices * per_slice)]
  return devices


def test_a_multi_slice_mesh_keeps_each_slice_in_consecutive_rows_of_the_data_axis():
  mesh_config = ml_collections.ConfigDict(dict(data=-1, model=2, dcn_data=2))
  grid = sharding.device_grid(mesh_config, fake_devices(num_slices=2, per_slice=4))
  assert grid.shape == (4, 2)
  slice_of = np.vectorize(lambda d: d.slice_index)(grid)
  np.testing.assert_array_equal(slice_of, [[0, 0], [0, 0], [1, 1], [1, 1]])
  assert sorted(d.id for d in grid.flat) == list(range(8))


def test_a_data_axis_that_does_not_split_over_the_slices_is_an_error():
  mesh_config = ml_collections.ConfigDict(dict(data=3, model=1, dcn_data=2))
  with pytest.raises(ValueError, match="mesh.data=3 does not split over mesh.dcn_data=2"):
    sharding.device_grid(mesh_config, fake_devices(num_slices=2, per_slice=1)[:1] * 3)


def test_the_rules_split_heads_and_mlp_units_over_model_and_fsdp_adds_data():
  mesh = sharding.create_mesh(ml_collections.ConfigDict(dict(data=4, model=2)))
  rules = common.get_config().sharding_rules
  shape = lambda *s: jax.ShapeDtypeStruct(s, np.float32)
  tree = {"encoderblock_0": {"MlpBlock_3": {"Dense_0": {"kernel": shape(64, 128)}},
                             "MultiHeadDotProductAttention_1": {"query": {"kernel": shape(64, 2, 32)}}},
          "encoderblock": {"MultiHeadDotProductAttention_1": {"out": {"kernel": shape(12, 2, 32, 64)}}},
          "head": {"kernel": shape(64, 10)}}
  specs = jax.tree.map(lambda s: s.spec, sharding.tree_shardings(tree, mesh, "fsdp", rules))
  assert specs["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"] == P("data", "model")
  assert specs["encoderblock_0"]["MultiHeadDotProductAttention_1"]["query"]["kernel"] == P("data", "model")
  assert specs["encoderblock"]["MultiHeadDotProductAttention_1"]["out"]["kernel"] == P(
      None, "model", None, "data")  # a scanned layer axis leads
  assert specs["head"]["kernel"] == P()  # under FSDP's minimum size


def test_a_rule_whose_dimension_does_not_divide_names_the_parameter():
  mesh = sharding.create_mesh(ml_collections.ConfigDict(dict(data=2, model=4)))
  tree = {"MlpBlock_3": {"Dense_0": {"kernel": jax.ShapeDtypeStruct((64, 6), np.float32)}}}
  with pytest.raises(ValueError, match=r"MlpBlock_3/Dense_0/kernel \(64, 6\).*'model' of size 4"):
    sharding.tree_shardings(tree, mesh, "data", common.get_config().sharding_rules)


@pytest.mark.slow
def test_tensor_parallel_training_on_a_data_by_model_mesh_equals_one_device():
  config = tiny_config(sharding="fsdp")
  batches = random_batches(config, 2)
  one = sharding.create_mesh(config.mesh, devices=jax.devices()[:1])
  config.mesh.update(data=4, model=2)
  two_d = sharding.create_mesh(config.mesh)
  expected_losses, expected, _ = run_steps(config, one, batches)
  losses, params, state = run_steps(config, two_d, batches)
  kernel = state.params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]
  assert kernel.sharding.spec == P("data", "model")
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  chex.assert_trees_all_close(params, expected, atol=1e-5)
