"""Start-up config checks: a bad value fails at once, in one message naming the key."""

import glob
import importlib.util
import pathlib

import ml_collections
import pytest

from configs import common
from vit_jax import config_checks

ROOT = pathlib.Path(__file__).parent.parent


@pytest.mark.parametrize("key, value, expected", [
    ("checkpoint_every", 0, "config.checkpoint_every=0 (int): must be a positive integer"),
    ("log_every", -1, "config.log_every=-1 (int): must be a positive integer"),
    ("eval_every", 0, "config.eval_every=0 (int): must be a positive integer"),
    ("batch_size", -32, "config.batch_size=-32 (int): must be a positive integer"),
    ("total_steps", 0, "config.total_steps=0 (int): must be a positive integer"),
    ("total_steps", "abc", "config.total_steps='abc' (str): must be a positive integer"),
    ("total_steps", 1.5, "config.total_steps=1.5 (float): must be a positive integer"),
    ("peak_flops_per_device", "fast", "config.peak_flops_per_device='fast' (str): must be a number >= 0"),
    ("optimizer.learning_rate", 0.0, "config.optimizer.learning_rate=0.0 (float): must be a number > 0"),
    ("optimizer.accum_steps", True, "config.optimizer.accum_steps=True (bool): must be a positive integer"),
    ("loss.label_smoothing", 1.0, "config.loss.label_smoothing=1.0 (float): must be a number in [0, 1)"),
])
def test_a_bad_value_is_named_with_its_key(key, value, expected):
  # Not type-safe, so that a value of another type can be set, as a config built in Python can.
  config = ml_collections.ConfigDict(common.get_config().to_dict(), type_safe=False)
  *parents, leaf = key.split(".")
  node = config
  for name in parents:
    node = node[name]
  node[leaf] = value
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate(config)
  assert str(error.value) == f"{expected}; set --config.{key}=... accordingly."


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "configs" / "*.py")) +
                                        glob.glob(str(ROOT / "configs" / "transfer" / "*.py"))),
                         ids=lambda p: pathlib.Path(p).name)
def test_every_shipped_config_passes(path):
  spec = importlib.util.spec_from_file_location("_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    return
  if path.endswith("vtab.py"):
    config_checks.validate(module.get_config("caltech101"))
  elif hasattr(module, "MODELS"):  # the studies' configs: every model
    for model in module.MODELS:
      config_checks.validate(module.get_config(model))
  else:
    config_checks.validate(module.get_config())
