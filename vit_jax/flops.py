"""FLOPs of one train step of the whole (global) batch, as MFU needs them.

A compiled step's cost analysis is per device once the step is partitioned, counts a scanned body
(`model.scan`, gradient accumulation) once instead of once per iteration, and counts remat's
recomputation. So the model's FLOPs come from the same step with every layer unrolled, no remat and no
accumulation, lowered (never compiled) on abstract inputs: XLA's count of the unpartitioned program.
"""

import jax
import jax.numpy as jnp
import ml_collections

from vit_jax import metrics
from vit_jax import steps


def unrolled_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` computing the same FLOPs without loops: no scan, remat or accumulation."""
  plain = ml_collections.ConfigDict(config.to_dict())
  plain.model.update(scan=False, remat=False)
  plain.optimizer.accum_steps = 1
  return plain


def train_step_flops(config: ml_collections.ConfigDict,
                     lowered: jax.stages.Lowered | None = None) -> float | None:
  """Global FLOPs of one train step of `config` at `config.batch_size` (None if XLA cannot count).

  `lowered`, the run's own step without a teacher, is counted as it is when `config` has no loops:
  the same count without tracing the model a second time (about a second per run on CPU).
  """
  plain = unrolled_config(config)
  if lowered is not None and plain.to_dict() == config.to_dict():
    return metrics.compiled_flops(lowered)
  model = steps.create_model(plain)
  tx = steps.create_optimizer(plain, model)
  state = jax.eval_shape(lambda: steps.init_train_state(plain, model, tx, jax.random.key(0)))
  size, batch = plain.dataset.image_size, plain.batch_size
  inputs = {"image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
            "label": jax.ShapeDtypeStruct((batch, plain.dataset.num_classes), jnp.float32)}
  return metrics.compiled_flops(jax.jit(steps.make_train_step(model, tx, plain)).lower(state, inputs))
