"""Model soups on toy params: the uniform average and the greedy selection."""

import numpy as np
import pytest

from vit_jax import soup


def toy(value):
  return {"head": {"kernel": np.full((2, 3), value, np.float32), "bias": np.array([value], np.float32)}}


def test_uniform_soup_is_the_mean_of_the_ingredients():
  averaged = soup.uniform_soup([toy(1.), toy(2.), toy(6.)])
  np.testing.assert_array_equal(averaged["head"]["kernel"], np.full((2, 3), 3., np.float32))
  assert averaged["head"]["bias"].dtype == np.float32 and averaged["head"]["bias"][0] == 3.


def test_ingredients_of_different_models_are_reported():
  with pytest.raises(ValueError, match="Ingredient 1 has another parameter tree"):
    soup.uniform_soup([toy(1.), {"head": {"kernel": np.zeros((2, 3))}}])


def test_greedy_soup_keeps_only_ingredients_that_do_not_lower_held_out_accuracy():
  # Held-out accuracy peaks when the soup's weight is 2: the score is 1 - |w - 2| / 10.
  score = lambda params: 1. - abs(float(params["head"]["bias"][0]) - 2.) / 10.
  ingredients = [toy(8.), toy(2.5), toy(1.5), toy(2.)]
  own = [score(p) for p in ingredients]  # 0.4, 0.95, 0.95, 1.0: visited 3, 1, 2, 0
  averaged, kept, accuracy = soup.greedy_soup(ingredients, own, score)
  # 3 (w=2, 1.0); +1 -> w=2.25 (0.975) dropped; +2 -> w=1.75 dropped; +0 -> w=5 dropped.
  assert kept == [3] and accuracy == 1.0
  np.testing.assert_array_equal(averaged["head"]["bias"], [2.])

  # An ingredient that leaves the held-out accuracy equal is kept (>=); one that raises it too.
  ingredients = [toy(9.), toy(2.), toy(2.), toy(1.)]
  averaged, kept, accuracy = soup.greedy_soup(ingredients, [0.3, 1.0, 1.0, 0.9], score)
  assert kept == [1, 2] and accuracy == 1.0  # 2 then 2 (equal); +1 -> 1.67 lower; +9 -> 4.33 lower
  ingredients = [toy(1.), toy(3.)]
  averaged, kept, accuracy = soup.greedy_soup(ingredients, [0.9, 0.9], score)
  assert kept == [0, 1] and accuracy == 1.0
  np.testing.assert_array_equal(averaged["head"]["bias"], [2.])
