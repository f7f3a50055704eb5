"""One batch of synthetic images from (data seed, category, instance): numpy only, no TensorFlow.

`source` calls it from tf.data; `export` and the tests call it directly.
"""

import functools

import numpy as np

from vit_jax.synthetic import contours
from vit_jax.synthetic import fractals
from vit_jax.synthetic import raster

FAMILIES = {"fractal": fractals, "contours": contours}


@functools.lru_cache(maxsize=8)
def category_table(family: str, data_seed: int, num_categories: int) -> np.ndarray:
  """Each category's parameters (cached: the train loop loads a split several times)."""
  table = FAMILIES[family].categories(data_seed, num_categories)
  table.flags.writeable = False
  return table


def num_points(family: str, image_size: int) -> int:
  """Points drawn per image: enough to light the shape at this resolution."""
  return round(FAMILIES[family].POINTS_PER_PIXEL * image_size**2)


def render(family: str, table: np.ndarray, categories: np.ndarray, instances: np.ndarray,
           data_seed: int, image_size: int, colour: bool) -> np.ndarray:
  """uint8 [B, S, S, 3]: instance instances[b] of category categories[b] of the family's `table`.

  Each image draws its random numbers from its own generator seeded by (data seed, category,
  instance), so it does not depend on the other images of the batch, nor on the process.
  """
  rngs = [np.random.default_rng([data_seed, int(c), int(i)]) for c, i in zip(categories, instances)]
  cloud = FAMILIES[family].points(table[categories], rngs, num_points(family, image_size))
  return raster.draw(cloud, rngs, image_size, colour)
