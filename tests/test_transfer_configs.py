"""Every transfer config loads, builds, and follows the paper's fine-tuning recipe (App. B.1.1, Table 4).
"""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.transfer import recipe
from configs.transfer import vtab
from vit_jax import models
from vit_jax import pretrained

# Paper Table 4: fine-tuning steps per data set.
STEPS = {"cifar10": 10_000, "cifar100": 10_000, "imagenet2012": 20_000, "imagenet2012_real": 20_000,
         "oxford_iiit_pet": 500, "oxford_flowers102": 500, "vtab": 2_500}
LR_SWEEPS = {"imagenet2012": (0.003, 0.01, 0.03, 0.06), "imagenet2012_real": (0.003, 0.01, 0.03, 0.06),
             "vtab": (0.01,)}
CASES = [(name, None) for name in STEPS if name != "vtab"] + [("vtab", task) for task in vtab.TASKS]


def get_config(name, arg):
  return importlib.import_module(f"configs.transfer.{name}").get_config(arg)


def test_every_config_in_the_folder_is_checked():
  folder = pathlib.Path(recipe.__file__).parent
  assert {p.stem for p in folder.glob("*.py")} - {"__init__", "recipe"} == set(STEPS)


@pytest.mark.parametrize("name,arg", CASES)
def test_recipe_is_the_papers(name, arg):
  config = get_config(name, arg)
  opt = config.optimizer
  assert (opt.name, opt.momentum, opt.weight_decay, opt.grad_clip_norm) == ("sgd", 0.9, 0.0, 1.0)
  assert opt.schedule == "cosine" and 0 < opt.warmup_steps < config.total_steps
  assert config.batch_size == 512 and config.total_steps == STEPS[name]
  assert config.dataset.image_size == 384 and config.dataset.source == "tfds"
  assert config.lr_sweep == LR_SWEEPS.get(name, recipe.LR_SWEEP) and opt.learning_rate in config.lr_sweep
  assert config.init_checkpoint in pretrained.CHECKPOINTS
  assert config.model.representation_size is None  # the pre-logits go; a new zero head comes
  assert 0.3 < config.published.accuracy < 1
  assert "Dosovitskiy et al. 2021, Table" in config.published.source


def test_224_is_an_option_with_its_own_published_number():
  config = get_config("cifar10", "ViT-B_16,224")
  assert config.dataset.image_size == 224 and config.published.accuracy is None
  assert "none published" in config.published.source
  imagenet = get_config("imagenet2012", "ViT-L_16,224")
  assert imagenet.published.accuracy == pytest.approx(0.827) and "README" in imagenet.published.source
  assert get_config("imagenet2012_real", None).published.metric == "real"


def test_vtab_is_the_1k_protocol_and_its_tasks_average_to_table_2():
  assert len(vtab.TASKS) == 19
  assert np.mean([task[-1] for task in vtab.TASKS.values()]) == pytest.approx(72.72, abs=0.02)
  config = get_config("vtab", "svhn,ViT-B_16,224")
  assert config.dataset.train_split == "train[:1000]"
  assert config.sweep_splits == ("train[:800]", "train[800:1000]")
  assert config.model.model_name == "ViT-B_16" and config.published.accuracy is None


def test_bad_arguments_say_what_is_expected():
  with pytest.raises(ValueError, match="TASK one of"):
    get_config("vtab", "imagenet")
  with pytest.raises(ValueError, match="expected MODEL\\[,RESOLUTION\\]"):
    get_config("cifar10", "ViT-B_16,384,x")
  with pytest.raises(ValueError, match="No published ImageNet-21k checkpoint for 'R26\\+ViT-B_32'"):
    get_config("cifar10", "R26+ViT-B_32")


@pytest.mark.parametrize("arg,grid", [("ViT-B_16", 24), ("ViT-B_16,224", 14), ("R50+ViT-B_16", 24)])
def test_models_build_at_the_fine_tuning_resolution(arg, grid):
  config = get_config("oxford_iiit_pet", arg)
  model = models.create(config.model, num_classes=config.dataset.num_classes)
  size = config.dataset.image_size
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             train=False))["params"]
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, grid * grid + 1, 768)
  assert params["head"]["kernel"].shape == (768, 37)
