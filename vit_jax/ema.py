"""Exponential moving average (EMA) of the parameters, kept in the train state.

The EMA follows timm's `ModelEmaV3` (Wightman, pytorch-image-models): after update number `n` (1 for the
first optimizer step) the average moves as `ema = decay_n * ema + (1 - decay_n) * params`, with
`decay_n = 0` for n <= 1 (the average starts as the params after the first step), else `decay`, or
with warm-up (`warmup_power > 0`, timm's `use_warmup` with gamma 1) `min(decay, 1 - n^-power)`, so
early averages forget the random init quickly (timm's default power is 2/3). We chose timm's form over optax.ema's
debiasing because the stored average is then itself a usable model at every step (no separate debias).
"""

import jax
import jax.numpy as jnp
import ml_collections


def decay_at(update: jax.Array, decay: float, warmup_power: float) -> jax.Array:
  """The decay of update number `update` (1-based), as timm's `ModelEmaV3.get_decay(step)`."""
  step = jnp.maximum(jnp.asarray(update, jnp.float32) - 1., 0.)
  if warmup_power > 0:
    value = jnp.minimum(decay, 1. - (1. + step) ** -warmup_power)
  else:
    value = jnp.asarray(decay, jnp.float32)
  return jnp.where(step <= 0, 0., value)


def update(ema_params, params, update: jax.Array, ema_config: ml_collections.ConfigDict):
  """The average after update number `update` has produced `params`; leaves keep their dtypes."""
  d = decay_at(update, ema_config.decay, ema_config.warmup_power)
  return jax.tree.map(lambda e, p: (d * e + (1. - d) * p).astype(e.dtype), ema_params, params)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` keeps an EMA (`ema.decay` > 0); checks the keys' ranges."""
  if not 0. <= config.ema.decay < 1.:
    raise ValueError(f"config.ema.decay={config.ema.decay} must be in [0, 1) (0 turns the EMA off).")
  if config.ema.warmup_power < 0:
    raise ValueError(f"config.ema.warmup_power={config.ema.warmup_power} must be >= 0 (0: no warm-up).")
  return config.ema.decay > 0
