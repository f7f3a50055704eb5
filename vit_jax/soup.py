"""Model soups (Wortsman et al., ICML 2022): averages of the weights of fine-tunes of one model.

The uniform soup averages every ingredient. The greedy soup visits the ingredients from the best
held-out accuracy down and keeps one only if the soup with it scores at least as well on the held-out
split as the soup without it (`>=`, as in mlfoundations/model-soups). Pure functions of params and of
a caller's held-out evaluation; the experiment over workdirs is `experiments/model_soup.py`.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

Params = Any


def uniform_soup(ingredients: Sequence[Params]) -> Params:
  """The element-wise mean of params trees of one structure and shape (computed in float64)."""
  if not ingredients:
    raise ValueError("A soup needs at least one ingredient.")
  first = jax.tree.structure(ingredients[0])
  for i, params in enumerate(ingredients[1:], start=1):
    if jax.tree.structure(params) != first:
      raise ValueError(f"Ingredient {i} has another parameter tree than ingredient 0: soups average "
                       "fine-tunes of one model (same architecture and head).")
  return jax.tree.map(
      lambda *leaves: np.mean(np.stack([np.asarray(x, np.float64) for x in leaves]), axis=0).astype(
          np.asarray(leaves[0]).dtype), *ingredients)


def greedy_soup(ingredients: Sequence[Params], held_out_accuracies: Sequence[float],
                held_out_accuracy: Callable[[Params], float]) -> tuple[Params, list[int], float]:
  """(soup, indices of the ingredients kept, its held-out accuracy).

  `held_out_accuracies[i]` is ingredient i's own held-out accuracy (it sets the order);
  `held_out_accuracy(params)` scores a candidate soup on the same held-out split.
  """
  if len(ingredients) != len(held_out_accuracies):
    raise ValueError(f"{len(ingredients)} ingredients but {len(held_out_accuracies)} held-out "
                     "accuracies: give one per ingredient.")
  order = sorted(range(len(ingredients)), key=lambda i: -held_out_accuracies[i])
  kept, best = [order[0]], held_out_accuracies[order[0]]
  for i in order[1:]:
    candidate = uniform_soup([ingredients[j] for j in kept + [i]])
    accuracy = held_out_accuracy(candidate)
    if accuracy >= best:
      kept, best = kept + [i], accuracy
  return uniform_soup([ingredients[j] for j in kept]), kept, best
