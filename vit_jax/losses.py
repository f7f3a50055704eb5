"""Classification losses chosen by `config.loss`, per example so the caller can weight and average.

Labels are float [B, C] rows: one-hot, or mixed by mixup. Losses are computed in float32 whatever the
logits' dtype, so a bf16 model does not lose precision in the log-sum-exp.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Per-example cross-entropy [B] of a softmax over classes."""
  logits, labels = _prepare(logits, labels, label_smoothing)
  return -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def sigmoid_cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Per-example binary cross-entropy [B], summed over classes (as big_vision does, not averaged)."""
  logits, labels = _prepare(logits, labels, label_smoothing)
  log_p = jax.nn.log_sigmoid(logits)
  log_not_p = jax.nn.log_sigmoid(-logits)
  return -jnp.sum(labels * log_p + (1.0 - labels) * log_not_p, axis=-1)


LOSSES = {
    "softmax_xent": softmax_cross_entropy,
    "sigmoid_xent": sigmoid_cross_entropy,
}


DISTILLATION_TYPES = ("hard", "soft")


def distillation_loss(cls_logits: jax.Array, dist_logits: jax.Array, labels: jax.Array,
                      teacher_logits: jax.Array, kind: str, alpha: float = 0.5,
                      tau: float = 1.0) -> jax.Array:
  """DeiT's loss per example [B] (Touvron et al. 2021, Section 4): the class head learns the labels,
  the distillation head the teacher.

  hard: (1 - alpha) CE(cls, labels) + alpha CE(dist, argmax teacher); the paper uses alpha = 1/2.
  soft: (1 - alpha) CE(cls, labels) + alpha tau^2 KL(softmax(teacher / tau) || softmax(dist / tau)),
  the KL summed over classes (the paper's formula; facebookresearch/deit's code divides the batch sum
  by batch x classes, which rescales alpha by 1 / classes).
  """
  if kind not in DISTILLATION_TYPES:
    raise ValueError(f"distillation.type={kind!r} is unknown; valid choices: {DISTILLATION_TYPES}.")
  base = softmax_cross_entropy(cls_logits, labels)
  teacher_logits = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32))
  if kind == "hard":
    targets = jax.nn.one_hot(jnp.argmax(teacher_logits, axis=-1), teacher_logits.shape[-1])
    distill = softmax_cross_entropy(dist_logits, targets)
  else:
    log_teacher = jax.nn.log_softmax(teacher_logits / tau, axis=-1)
    log_student = jax.nn.log_softmax(jnp.asarray(dist_logits, jnp.float32) / tau, axis=-1)
    distill = tau**2 * jnp.sum(jnp.exp(log_teacher) * (log_teacher - log_student), axis=-1)
  return (1. - alpha) * base + alpha * distill


def loss_fn(loss_config: ml_collections.ConfigDict) -> LossFn:
  """The per-example loss `(logits, labels) -> [B]` named by `loss.name`, with its smoothing bound."""
  if loss_config.name not in LOSSES:
    raise ValueError(
        f"loss.name={loss_config.name!r} is unknown; valid choices: {list(LOSSES)}.")
  if not 0 <= loss_config.label_smoothing < 1:
    raise ValueError(f"loss.label_smoothing={loss_config.label_smoothing} must be in [0, 1).")
  return functools.partial(LOSSES[loss_config.name], label_smoothing=loss_config.label_smoothing)


def _prepare(
    logits: jax.Array, labels: jax.Array, label_smoothing: float
) -> tuple[jax.Array, jax.Array]:
  """Casts to float32 and smooths labels towards uniform: labels * (1 - s) + s / C."""
  if logits.shape != labels.shape:
    raise ValueError(
        f"logits {logits.shape} and labels {labels.shape} must have the same [batch, classes] shape; "
        "labels are one-hot (or mixed) float rows.")
  logits = jnp.asarray(logits, jnp.float32)
  labels = jnp.asarray(labels, jnp.float32)
  return logits, labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
