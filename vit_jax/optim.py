"""Optimizer and learning-rate schedule built from `config.optimizer`.

The paper pretrains with Adam(W), linear warmup and linear decay, and fine-tunes with SGD + momentum,
warmup and cosine decay, both with global-norm gradient clipping at 1. `accum_steps` is validated here
but applied by the train step, which sums micro-batch gradients before calling this optimizer.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(
    opt_config: ml_collections.ConfigDict, total_steps: int
) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then decay to `end_learning_rate` at `total_steps`.

  `constant` holds `learning_rate` after the warmup and so ignores `end_learning_rate`. Past
  `total_steps` the schedule holds its final value.
  """
  if opt_config.schedule not in SCHEDULES:
    raise ValueError(
        f"optimizer.schedule={opt_config.schedule!r} is unknown; valid choices: {list(SCHEDULES)}.")
  warmup_steps = opt_config.warmup_steps
  if warmup_steps < 0:
    raise ValueError(f"optimizer.warmup_steps={warmup_steps} must be >= 0.")
  if warmup_steps >= total_steps:
    raise ValueError(
        f"optimizer.warmup_steps={warmup_steps} must be smaller than total_steps={total_steps}, "
        "or the schedule never leaves the warmup.")
  peak, end, name = opt_config.learning_rate, opt_config.end_learning_rate, opt_config.schedule
  if peak < 0 or end < 0:
    raise ValueError(
        f"optimizer.learning_rate={peak} and optimizer.end_learning_rate={end} must be >= 0.")

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    step = jnp.asarray(step, jnp.float32)
    warmup = peak * step / max(warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    if name == "cosine":
      decayed = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif name == "linear":
      decayed = peak + (end - peak) * progress
    else:
      decayed = jnp.full_like(progress, peak)
    return jnp.where(step < warmup_steps, warmup, decayed)

  return schedule


def create_optimizer(
    opt_config: ml_collections.ConfigDict, total_steps: int, params: Any
) -> optax.GradientTransformation:
  """Gradient clipping, then AdamW / Adam / SGD on the schedule, with an optional slower backbone.

  Params under the top-level key `head` follow the schedule; all others follow it times
  `backbone_lr_multiplier`. A multiplier of 0 freezes the backbone: its updates are exactly zero, it
  keeps no optimizer state, and its gradients do not count towards the clipping norm.
  """
  _validate(opt_config)
  schedule = learning_rate_schedule(opt_config, total_steps)
  clip = (optax.clip_by_global_norm(opt_config.grad_clip_norm)
          if opt_config.grad_clip_norm > 0 else optax.identity())
  multiplier = opt_config.backbone_lr_multiplier
  if multiplier == 1:
    return optax.chain(clip, _base_optimizer(opt_config, schedule))

  top_level_keys = list(params.keys()) if hasattr(params, "keys") else []
  if "head" not in top_level_keys:
    raise ValueError(
        f"optimizer.backbone_lr_multiplier={multiplier} needs params with a top-level 'head' key; "
        f"got top-level keys {top_level_keys}.")
  labels = jax.tree_util.tree_map_with_path(
      lambda path, _: "head" if _key(path[0]) == "head" else "backbone", params)
  if multiplier == 0:
    return optax.partition(
        {"head": optax.chain(clip, _base_optimizer(opt_config, schedule)),
         "backbone": optax.set_to_zero()},
        labels)
  backbone_schedule = lambda step: multiplier * schedule(step)
  return optax.chain(
      clip,
      optax.partition(
          {"head": _base_optimizer(opt_config, schedule),
           "backbone": _base_optimizer(opt_config, backbone_schedule)},
          labels))


def _validate(opt_config: ml_collections.ConfigDict) -> None:
  """Rejects settings that optax would accept silently but that cannot be what the user meant."""
  if opt_config.name not in OPTIMIZERS:
    raise ValueError(
        f"optimizer.name={opt_config.name!r} is unknown; valid choices: {list(OPTIMIZERS)}.")
  if opt_config.name == "adam" and opt_config.weight_decay != 0:
    raise ValueError(
        f"optimizer.weight_decay={opt_config.weight_decay} has no effect with optimizer.name='adam'; "
        "set it to 0 or use 'adamw'.")
  if opt_config.weight_decay < 0:
    raise ValueError(f"optimizer.weight_decay={opt_config.weight_decay} must be >= 0.")
  if not 0 <= opt_config.momentum < 1:
    raise ValueError(f"optimizer.momentum={opt_config.momentum} must be in [0, 1).")
  for key in ("b1", "b2"):
    if not 0 <= opt_config[key] < 1:
      raise ValueError(f"optimizer.{key}={opt_config[key]} must be in [0, 1).")
  if opt_config.grad_clip_norm < 0:
    raise ValueError(
        f"optimizer.grad_clip_norm={opt_config.grad_clip_norm} must be >= 0 (0 disables clipping).")
  if opt_config.get("mu_dtype") not in (None, "", "float32", "bfloat16"):
    raise ValueError(f"optimizer.mu_dtype={opt_config.mu_dtype!r} is unknown; use '' (float32) or "
                     "'bfloat16'.")
  if opt_config.accum_steps < 1:
    raise ValueError(f"optimizer.accum_steps={opt_config.accum_steps} must be >= 1.")
  if opt_config.backbone_lr_multiplier < 0:
    raise ValueError(
        f"optimizer.backbone_lr_multiplier={opt_config.backbone_lr_multiplier} must be >= 0 "
        "(0 freezes the backbone).")


def _base_optimizer(
    opt_config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """The update direction, decoupled weight decay on kernels (times the learning rate), then the lr.

  Weight decay follows optax.adamw, and applies to SGD the same way when `weight_decay` > 0.
  """
  if opt_config.name == "sgd":
    direction = (optax.trace(decay=opt_config.momentum, nesterov=False)
                 if opt_config.momentum > 0 else optax.identity())
  else:
    direction = optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2,
                                    mu_dtype=opt_config.get("mu_dtype") or None)
  decay = (optax.add_decayed_weights(opt_config.weight_decay, mask=_kernel_mask)
           if opt_config.weight_decay > 0 else optax.identity())
  return optax.chain(direction, decay, optax.scale_by_learning_rate(schedule))


def _kernel_mask(tree: Any) -> Any:
  """True for the `kernel` leaves: biases, norms, embeddings and tokens are not decayed."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _key(path[-1]) == "kernel", tree)


def _key(entry: Any) -> Any:
  return getattr(entry, "key", getattr(entry, "name", None))
