"""configs/pretrain: every FDSL recipe builds, and its data and schedule say what its docstring says."""

import importlib

import pytest

from configs.pretrain import fdsl
from configs.pretrain import fractal_cpu

PAPER_SCALE = {"fractaldb_1k": ("fractal", 1_000), "fractaldb_10k": ("fractal", 10_000),
               "exfractaldb_21k": ("fractal", 21_000), "rcdb_21k": ("contours", 21_000)}


@pytest.mark.parametrize("name, family_and_categories", PAPER_SCALE.items())
def test_paper_scale_configs_have_their_categories_and_300_epochs(name, family_and_categories):
  config = importlib.import_module(f"configs.pretrain.{name}").get_config("ViT-S_16")
  family, categories = family_and_categories
  assert (config.dataset.source, config.dataset.num_categories) == (family, categories)
  assert config.dataset.num_classes == categories and config.dataset.instances_per_category == 1000
  assert config.total_steps == 300 * (categories * 1000 // 1024)
  assert config.model.hidden_size == 384 and config.dataset.image_size == 224
  assert config.optimizer.learning_rate == pytest.approx(1e-3)  # 5e-4 x 1024 / 512


def test_paper_scale_config_rejects_other_models():
  with pytest.raises(ValueError, match="ViT-Ti_16"):
    fdsl.pretrain_config("ViT-L_16", family="fractal", num_categories=10, instances_per_category=1)


def test_cpu_config_classes_follow_the_number_of_categories():
  config = fractal_cpu.get_config("vit_small,contours")
  assert config.dataset.source == "contours" and config.model.hidden_size == 128
  config.dataset.num_categories = 37
  assert config.dataset.num_classes == 37
  with pytest.raises(ValueError, match="MODEL,FAMILY"):
    fractal_cpu.get_config("vit_small,mandelbrot")
