"""Everything a run leaves in its workdir: resolved config, orbax train-state checkpoints, results.

Layout: `config.json`, `checkpoints/<step>/` (orbax, async, the last K kept), TensorBoard events, and
`results.json` once the run is done. Local paths and `gs://` alike.
"""

import json
import os
from typing import Any

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"


def _absolute(workdir: str | epath.Path) -> epath.Path:
  """Orbax wants absolute paths; cloud paths (gs://...) already are."""
  workdir = str(workdir)
  return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def checkpoint_manager(workdir: str | epath.Path, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                         create=True)
  return ocp.CheckpointManager(_absolute(workdir) / "checkpoints", options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def save_state(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Starts an async save; training goes on while it is written."""
  manager.save(step, args=ocp.args.StandardSave(state))


def restore_state(manager: ocp.CheckpointManager, like: Any, step: int | None = None) -> Any:
  """The state at `step` (default latest), laid out as `like` (arrays or ShapeDtypeStructs with
  shardings): a checkpoint saved on one mesh restores onto any other."""
  step = manager.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def write_config(workdir: str | epath.Path, config: ml_collections.ConfigDict) -> None:
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def read_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {workdir} is not a vit_jax workdir (no config.json).")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def write_results(workdir: str | epath.Path, results: dict[str, Any]) -> None:
  (epath.Path(workdir) / RESULTS_FILE).write_text(json.dumps(results, indent=2, sort_keys=True))


def read_results(workdir: str | epath.Path) -> dict[str, Any] | None:
  path = epath.Path(workdir) / RESULTS_FILE
  return json.loads(path.read_text()) if path.exists() else None


def load_params(workdir: str | epath.Path,
                use_ema: bool = False) -> tuple[ml_collections.ConfigDict, Any]:
  """The run's config and the params (or with `use_ema` their moving average) of its latest
  checkpoint, as host numpy arrays."""
  config = read_config(workdir)
  manager = checkpoint_manager(workdir, keep=config.keep_checkpoints)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {epath.Path(workdir) / 'checkpoints'}.")
  # Onto one local device, whatever mesh the run was saved from.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          dict(manager.item_metadata(step)))
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  manager.close()
  key = "ema_params" if use_ema else "params"
  if not restored.get(key):
    raise ValueError(f"The checkpoint of step {step} in {workdir} has no EMA params: the run was "
                     "trained with config.ema.decay=0. Load its raw params instead (no --use_ema / "
                     "init_use_ema).")
  return config, jax.device_get(restored[key])
