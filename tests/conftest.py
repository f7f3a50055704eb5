"""Test set-up: 8 fake CPU devices, so that sharded code is exercised on one machine.

LLVM at -O0 (`xla_backend_optimization_level`): the suite's tiny programs run for milliseconds but
compile for seconds, and compiling is most of the suite's time; -O0 compiles them ~40% faster and gives
results within float tolerance. Scripts that the tests launch inherit it, except those that set their own
XLA_FLAGS (the multi-process, kill/resume and host-device runs keep the default).
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import ml_collections
import pytest

from configs import models as model_configs


@pytest.fixture
def tiny_model_config() -> ml_collections.ConfigDict:
  """A two-block ViT on 32x32 images with 4x4 patches: the shape of the official fixtures."""
  config = model_configs.get_model_config("ViT-Ti_16")
  config.patches.size = (4, 4)
  config.hidden_size = 32
  config.transformer.update(mlp_dim=64, num_heads=2, num_layers=2)
  config.num_classes = 10
  return config
