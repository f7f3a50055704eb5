"""Device mesh, parameter layouts and multi-host start-up: sharding is configuration, not model code.

One `Mesh` with axes ('data', 'model') spans every device of every process. Batches are split over
'data'. Parameters and optimizer state are either replicated (`data`, plain data parallelism) or split
along their largest evenly divisible dimension over 'data' (`fsdp`), so a model too large for one device
still trains; XLA inserts the all-gathers.
"""

import math
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

STRATEGIES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: gathering them costs more than storing them.
_FSDP_MIN_SIZE = 2**12


def create_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """The ('data', 'model') mesh; an axis of size -1 takes all devices the other leaves."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  data, model = mesh_config.data, mesh_config.model
  if data == -1 and model == -1:
    raise ValueError("Only one of mesh.data and mesh.model can be -1.")
  if data == -1:
    data = devices.size // model if model > 0 and devices.size % model == 0 else 0
  if model == -1:
    model = devices.size // data if data > 0 and devices.size % data == 0 else 0
  if data * model != devices.size or data <= 0:
    raise ValueError(f"mesh.data={mesh_config.data} x mesh.model={mesh_config.model} does not cover the "
                     f"{devices.size} devices; choose sizes whose product is {devices.size} (or -1).")
  return Mesh(devices.reshape(data, model), ("data", "model"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', replicated over 'model'."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], axis_size: int) -> P:
  if math.prod(shape) < _FSDP_MIN_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "data"
      return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, strategy: str) -> Any:
  """A `NamedSharding` per leaf of `tree` (params or a whole train state, concrete or abstract)."""
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown sharding {strategy!r}; use one of {STRATEGIES}.")
  if strategy == "data":
    return jax.tree.map(lambda _: replicated(mesh), tree)
  axis_size = mesh.shape["data"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(tuple(x.shape), axis_size)), tree)
