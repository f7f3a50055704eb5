"""Scores params on any split of a run's data set: the studies' held-out and test scores.

Model soups score their ingredients and soups on a held-out split and on the test split; the
data-scaling study scores every checkpoint of a run on the validation split, and the best one on the
test split. Params are host arrays (`workdir.load_params`) or arrays on any layout.
"""

from typing import Any, Callable

import ml_collections


def make_evaluator(config: ml_collections.ConfigDict, split: str, *,
                   probes: bool = True) -> Callable[[Any], dict[str, float]]:
  """f(params) -> `config`'s eval metrics on `split` of its data set (the eval transform), plus its
  few-shot probes (`config.fewshot`) when `probes`."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  config.dataset.eval_split = split
  if not probes and config.get("fewshot"):
    config.fewshot.shots = ()
  mesh = sharding.create_mesh(config.mesh)
  model = train.create_model(config)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jax.numpy.zeros((1,) + (config.dataset.image_size,) * 2 + (3,)))["params"])
  params_sharding = sharding.tree_shardings(shapes, mesh, config.sharding)
  evaluator = train.make_evaluator(config, model, mesh, params_sharding)
  return lambda params: evaluator(jax.device_put(params, params_sharding))


def make_scorer(config: ml_collections.ConfigDict, split: str) -> Callable[[Any], float]:
  """f(params) -> accuracy of `config`'s model on `split` of its data set (no few-shot probes)."""
  evaluator = make_evaluator(config, split, probes=False)
  return lambda params: evaluator(params)["accuracy"]
