"""configs/pretrain: every FDSL recipe builds, and its data and schedule say what its docstring says."""

import importlib

import jax
import numpy as np
import pytest

from configs.deit import imagenet1k as deit
from configs.pretrain import fdsl
from configs.pretrain import fractal_cpu
from vit_jax import input_pipeline

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


def test_paper_scale_recipe_is_deits_with_rendered_data_in_place_of_imagenet():
  config = fdsl.pretrain_config("ViT-B_16", family="contours", num_categories=21_000,
                                instances_per_category=1000)
  recipe = deit.get_config("ViT-B_16")
  for key in ("optimizer.name", "optimizer.weight_decay", "optimizer.schedule",
              "optimizer.end_learning_rate", "optimizer.grad_clip_norm", "loss.label_smoothing",
              "ema.decay", "model.stochastic_depth", "model.transformer.dropout_rate",
              "dataset.randaugment_layers", "dataset.randaugment_magnitude", "dataset.mixup_alpha",
              "dataset.cutmix_alpha", "dataset.train_augment", "dataset.image_size", "batch_size"):
    mine, theirs = config, recipe
    for part in key.split("."):
      mine, theirs = mine[part], theirs[part]
    assert mine == theirs, key
  assert (config.dataset.name, config.dataset.train_split, config.dataset.eval_split) == ("", "train", "test")
  assert config.optimizer.warmup_steps == 5 * (21_000 * 1000 // 1024)


def test_deits_augmentation_runs_on_rendered_images(sharding):
  config = fdsl.pretrain_config(None, family="fractal", num_categories=4, instances_per_category=2).dataset
  config.update(image_size=32, shuffle_buffer=8)
  stream = input_pipeline.train_batches(config, global_batch_size=8, seed=0, start_step=0,
                                        sharding=sharding)
  batch = jax.tree.map(np.asarray, next(stream))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["label"].shape == (8, 4)
  np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-5)
  assert (batch["label"].max(-1) < 1.0).any()  # mixup or CutMix blended the labels


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
