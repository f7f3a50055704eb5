"""Test set-up: 8 fake CPU devices, so that sharded code is exercised on one machine, and LLVM at -O0
(tests/xla_flags.py). Scripts that the tests launch inherit both, or set their own with `xla_flags`.
"""

import os

from tests.xla_flags import xla_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
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


@pytest.fixture(scope="session")
def sharding() -> NamedSharding:
  """A batch split over the 8 devices: the data axis of a (data 8, model 1) mesh."""
  return NamedSharding(Mesh(np.array(jax.devices()).reshape(8, 1), ("data", "model")), P("data"))
