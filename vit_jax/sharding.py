"""Device mesh and parameter layouts: sharding is configuration, not model code.

One `Mesh` with axes ('data', 'model') spans every device of every process, laid out by
`mesh_utils` from the physical topology (TPU ICI torus), and across TPU slices (`mesh.dcn_data` > 1)
with the data axis split between slices, so that only the gradient all-reduce crosses the slow
data-centre network. Batches are split over 'data'. Parameters follow big_vision-style rules,
(regex, spec) pairs from the config: the default ones split the attention heads and the MLP hidden
units over 'model' (Megatron-style tensor parallelism; a no-op while `mesh.model` is 1). On top,
`fsdp` splits each parameter and its optimizer state along its largest evenly divisible free
dimension over 'data', so a model too large for one device still trains; XLA inserts the
collectives.
"""

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

STRATEGIES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: gathering them costs more than storing them.
_FSDP_MIN_SIZE = 2**12
Rules = Sequence[tuple[str, Sequence[str | None]]]


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """(data, model) sizes; an axis of size -1 takes all devices the other leaves."""
  data, model = mesh_config.data, mesh_config.model
  if data == -1 and model == -1:
    raise ValueError("Only one of mesh.data and mesh.model can be -1.")
  if data == -1:
    data = num_devices // model if model > 0 and num_devices % model == 0 else 0
  if model == -1:
    model = num_devices // data if data > 0 and num_devices % data == 0 else 0
  if data * model != num_devices or data <= 0:
    raise ValueError(f"mesh.data={mesh_config.data} x mesh.model={mesh_config.model} does not cover the "
                     f"{num_devices} devices; choose sizes whose product is {num_devices} (or -1).")
  return data, model


def device_grid(mesh_config: ml_collections.ConfigDict, devices: Sequence[Any]) -> np.ndarray:
  """The devices as a [data, model] array: topology-aware within a slice, slices stacked along 'data'.

  `mesh.dcn_data` > 1 needs devices with a `slice_index` (multi-slice TPU); each slice then holds
  data / dcn_data consecutive rows of the data axis.
  """
  data, model = mesh_shape(mesh_config, len(devices))
  slices = mesh_config.get("dcn_data", 1)
  if slices == 1:
    return mesh_utils.create_device_mesh((data, model), devices)
  if data % slices:
    raise ValueError(f"mesh.data={data} does not split over mesh.dcn_data={slices} slices; use a "
                     f"multiple of {slices}.")
  return mesh_utils.create_hybrid_device_mesh((data // slices, model), (slices, 1), devices)


def create_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The ('data', 'model') mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(device_grid(mesh_config, devices), ("data", "model"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', replicated over 'model'."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _path_name(path: tuple[Any, ...]) -> str:
  """'opt_state/1/0/mu/Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'-style names."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _rule_spec(name: str, shape: tuple[int, ...], rules: Rules, mesh: Mesh) -> list[str | None]:
  """The first matching rule's spec, aligned to the trailing dimensions (a scanned layer axis leads)."""
  for pattern, rule in rules:
    if not re.search(pattern, name):
      continue
    if len(rule) > len(shape):
      raise ValueError(f"Sharding rule {pattern!r} -> {tuple(rule)} has more dimensions than {name} "
                       f"{shape}; fix the rule in config.sharding_rules.")
    # An axis of size 1 splits nothing: leave the dimension free for FSDP, as without the rule.
    spec = [None] * (len(shape) - len(rule)) + [a if a and mesh.shape[a] > 1 else None for a in rule]
    for size, axis in zip(shape, spec):
      if axis is not None and size % mesh.shape[axis]:
        raise ValueError(f"{name} {shape}: dimension {size} does not split over mesh axis {axis!r} of "
                         f"size {mesh.shape[axis]} (rule {pattern!r}); change config.mesh.")
    return spec
  return [None] * len(shape)


def _fsdp(spec: list[str | None], shape: tuple[int, ...], axis_size: int) -> list[str | None]:
  if math.prod(shape) < _FSDP_MIN_SIZE:
    return spec
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if spec[dim] is None and shape[dim] % axis_size == 0:
      return spec[:dim] + ["data"] + spec[dim + 1:]
  return spec


def tree_shardings(tree: Any, mesh: Mesh, strategy: str, rules: Rules = ()) -> Any:
  """A `NamedSharding` per leaf of `tree` (params or a whole train state, concrete or abstract)."""
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown sharding {strategy!r}; use one of {STRATEGIES}.")

  def leaf_sharding(path, x):
    shape = tuple(x.shape)
    spec = _rule_spec(_path_name(path), shape, rules, mesh)
    if strategy == "fsdp":
      spec = _fsdp(spec, shape, mesh.shape["data"])
    while spec and spec[-1] is None:  # P(None, None) is P(): one spelling, as before
      spec.pop()
    return NamedSharding(mesh, P(*spec))

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)
