"""Synthetic data sets as `data_sources.Source`s: cheap example indices, rendered by `decode_batch`.

Example i of a split is category i % C, instance i // C (so every slice holds all categories
evenly). The train split holds instances 0 .. I-1 of each category (config.dataset.
instances_per_category = I), or with I = 0 an endless supply (`UNLIMITED_INSTANCES` per category: no
run ever repeats one), still indexed, so the input pipeline shuffles, skips and resumes it as any
other source; the test split holds `eval_instances_per_category` other instances. Image i is a pure
function of (config.dataset.data_seed, category, instance): every process and every rerun draws the
same one, and each process renders only its own part of the split (data_sources.process_range).
"""

import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax import data_sources
from vit_jax.synthetic import generate

UNLIMITED_INSTANCES = 2**31
EVAL_INSTANCE_OFFSET = 2**40  # test instances: never among the train ones
SPLITS = ("train", "test")


def split_size(data_config: ml_collections.ConfigDict, name: str) -> int:
  """Examples in the whole split `name` (before slicing)."""
  per_category = {"train": data_config.instances_per_category or UNLIMITED_INSTANCES,
                  "test": data_config.eval_instances_per_category}[name]
  return data_config.num_categories * per_category


def load(data_config: ml_collections.ConfigDict, split: str) -> data_sources.Source:
  """This process's part of `split` ("train" or "test", sliced as any split) of a synthetic family."""
  family = data_config.source
  name = data_sources.parse_split(split, 0)[0]
  if name not in SPLITS:
    raise ValueError(f"Synthetic source {family!r} has splits {SPLITS}, not {split!r}.")
  if data_config.num_categories < 1 or data_config.instances_per_category < 0:
    raise ValueError(
        f"config.dataset.num_categories={data_config.num_categories} must be >= 1 and "
        f"config.dataset.instances_per_category={data_config.instances_per_category} >= 0 "
        "(0: unlimited).")
  part, num_split_examples = data_sources._process_part(split, split_size(data_config, name))  # pylint: disable=protected-access
  table = generate.category_table(family, data_config.data_seed, data_config.num_categories)
  num_categories, size = data_config.num_categories, data_config.image_size
  instance_offset = EVAL_INSTANCE_OFFSET if name == "test" else 0

  def render_indices(indices: np.ndarray) -> np.ndarray:
    return generate.render(family, table, indices % num_categories,
                  indices // num_categories + instance_offset, data_config.data_seed, size,
                  data_config.colour)

  def decode_batch(x: data_sources.Features) -> data_sources.Features:
    images = tf.numpy_function(render_indices, [x["index"]], tf.uint8, stateful=False)
    images = tf.ensure_shape(images, [None, size, size, 3])
    return {"image": images, "label": x["index"] % num_categories}

  def decode(x: data_sources.Features) -> data_sources.Features:
    return tf.nest.map_structure(lambda v: v[0], decode_batch({"index": x["index"][None]}))

  return data_sources.Source(
      dataset=tf.data.Dataset.range(part.start, part.stop).map(lambda i: {"index": i}),
      decode=decode,
      decode_batch=decode_batch,
      num_examples=part.stop - part.start,
      num_split_examples=num_split_examples,
      num_classes=num_categories,
  )
