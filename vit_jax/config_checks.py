"""Start-up checks of a training config: one line naming the key, before anything is built or written.

The rules are a table: (dotted key, what it must be, test). `validate` reports the first key that
breaks its rule; `train_and_evaluate` calls it first, and `main` prints its message as the one line
of a failed start.
"""

import numbers
from typing import Any, Callable

import ml_collections


class ConfigError(ValueError):
  """A config value no run can use; the message names the key, its value and what it must be."""


def _integer(x: Any) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


_POSITIVE_INT = ("a positive integer", lambda x: _integer(x) and x > 0)
_NON_NEGATIVE_INT = ("an integer >= 0", lambda x: _integer(x) and x >= 0)
_POSITIVE_NUMBER = ("a number > 0", lambda x: _number(x) and x > 0)
_NON_NEGATIVE_NUMBER = ("a number >= 0", lambda x: _number(x) and x >= 0)
_FRACTION = ("a number in [0, 1)", lambda x: _number(x) and 0 <= x < 1)
_TEXT = ("a string", lambda x: isinstance(x, str))

RULES: tuple[tuple[str, tuple[str, Callable[[Any], bool]]], ...] = (
    ("seed", ("an integer", _integer)),
    ("total_steps", _POSITIVE_INT),
    ("batch_size", _POSITIVE_INT),
    ("eval_batch_size", _POSITIVE_INT),
    ("log_every", _POSITIVE_INT),
    ("eval_every", _POSITIVE_INT),
    ("checkpoint_every", _POSITIVE_INT),
    ("keep_checkpoints", _POSITIVE_INT),
    ("peak_flops_per_device", _NON_NEGATIVE_NUMBER),
    ("init_checkpoint", _TEXT),
    ("dataset.num_classes", _POSITIVE_INT),
    ("dataset.image_size", _POSITIVE_INT),
    ("dataset.shuffle_buffer", _POSITIVE_INT),
    ("dataset.prefetch", _NON_NEGATIVE_INT),
    ("dataset.randaugment_reference_size", _NON_NEGATIVE_INT),
    ("dataset.mixup_alpha", _NON_NEGATIVE_NUMBER),
    ("optimizer.learning_rate", _POSITIVE_NUMBER),
    ("optimizer.warmup_steps", _NON_NEGATIVE_INT),
    ("optimizer.end_learning_rate", _NON_NEGATIVE_NUMBER),
    ("optimizer.weight_decay", _NON_NEGATIVE_NUMBER),
    ("optimizer.grad_clip_norm", _NON_NEGATIVE_NUMBER),
    ("optimizer.accum_steps", _POSITIVE_INT),
    ("optimizer.backbone_lr_multiplier", _NON_NEGATIVE_NUMBER),
    ("loss.label_smoothing", _FRACTION),
    ("model.hidden_size", _POSITIVE_INT),
    ("model.transformer.num_layers", _NON_NEGATIVE_INT),  # 0: a pure ResNet (the hybrid stem only)
    ("model.transformer.num_heads", _POSITIVE_INT),
    ("model.transformer.mlp_dim", _POSITIVE_INT),
)

_MISSING = object()


def _lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for name in key.split("."):
    if not hasattr(node, "keys") or name not in node:
      return _MISSING
    node = node[name]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` for the first key that breaks its rule; keys the config lacks are skipped
  (a config for another purpose, such as a few-shot probe, may leave them out)."""
  for key, (expected, ok) in RULES:
    value = _lookup(config, key)
    if value is not _MISSING and not ok(value):
      raise ConfigError(f"config.{key}={value!r} ({type(value).__name__}): must be {expected}; "
                        f"set --config.{key}=... accordingly.")
