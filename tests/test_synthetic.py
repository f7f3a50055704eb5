"""Synthetic sources (vit_jax/synthetic): determinism, sharding, statistics, resumable streams."""

import hashlib
import itertools
import subprocess
import sys

import chex
import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

from configs import common
from vit_jax import data_sources
from vit_jax import input_pipeline
from vit_jax.synthetic import export
from vit_jax.synthetic import fractals
from vit_jax.synthetic import generate
from vit_jax.synthetic import source

FAMILIES = ("fractal", "contours")


def _config(family: str, **overrides) -> ml_collections.ConfigDict:
  config = common.get_config().dataset
  config.update(dict(source=family, num_categories=5, instances_per_category=3, image_size=16,
                     train_augment="central_crop", shuffle_buffer=64, num_classes=5))
  config.update(overrides)
  return config


def _render(family: str, categories, instances, size: int = 32, colour: bool = True) -> np.ndarray:
  table = generate.category_table(family, 0, 10)
  return generate.render(family, table, np.asarray(categories), np.asarray(instances), 0, size,
                         colour)


# Run in a fresh interpreter (numpy only: vit_jax.synthetic.generate imports no TensorFlow).
_DIGEST = """import hashlib, numpy as np
from vit_jax.synthetic import generate
table = generate.category_table({family!r}, 0, 10)
images = generate.render({family!r}, table, np.array([3, 7]), np.array([11, 2**35]), 0, 32, True)
print(hashlib.sha256(images.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_same_image_from_the_same_seed_category_and_instance_in_another_process(family):
  other = subprocess.run([sys.executable, "-c", _DIGEST.format(family=family)],
                         capture_output=True, text=True, check=True)
  here = hashlib.sha256(_render(family, [3, 7], [11, 2**35]).tobytes()).hexdigest()
  assert other.stdout.strip() == here


@pytest.mark.parametrize("family", FAMILIES)
def test_an_image_does_not_depend_on_the_rest_of_its_batch(family):
  alone = _render(family, [4], [9])
  in_batch = _render(family, [1, 4, 2], [0, 9, 5])
  np.testing.assert_array_equal(alone[0], in_batch[1])
  assert (in_batch[0] != in_batch[2]).any()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split, size", [("train", 15), ("test", 50), ("train[2:13]", 11)])
def test_shards_of_two_processes_are_disjoint_and_complete(monkeypatch, family, split, size):
  config = _config(family)
  shards = []
  for index in range(2):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    loaded = data_sources.load(config, split)
    shards.append([x["index"] for x in loaded.dataset.as_numpy_iterator()])
    assert loaded.num_examples == len(shards[-1]) and loaded.num_split_examples == size
  start = data_sources.parse_split(split, size if split == "test" else 15)[1]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == list(range(start, start + size))


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_of_one_example_equals_its_row_of_a_decoded_batch(family):
  loaded = data_sources.load(_config(family), "test")
  batch = next(loaded.dataset.batch(6).map(loaded.decode_batch).as_numpy_iterator())
  one = next(loaded.dataset.skip(4).map(loaded.decode).as_numpy_iterator())
  np.testing.assert_array_equal(one["image"], batch["image"][4])
  assert one["label"] == batch["label"][4] == 4 % 5 and one["image"].shape == (16, 16, 3)


def test_unlimited_instances_and_held_out_test_instances():
  train = data_sources.load(_config("fractal", instances_per_category=0), "train")
  assert train.num_split_examples == 5 * source.UNLIMITED_INSTANCES
  test = data_sources.load(_config("fractal", instances_per_category=0), "test")
  assert test.num_split_examples == 5 * 10
  # The test split's first image is instance 2**40 of category 0, not train instance 0.
  first_test = next(test.dataset.map(test.decode).as_numpy_iterator())["image"]
  first_train = next(train.dataset.map(train.decode).as_numpy_iterator())["image"]
  assert (first_test != first_train).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_no_blank_or_degenerate_images(family):
  images = _render(family, np.arange(64) % 10, np.arange(64), size=32, colour=False)
  lit = (images.max(-1) > 0).mean(axis=(1, 2))
  assert 0.03 < lit.min() and lit.max() < 0.75, (lit.min(), lit.max())
  assert set(np.unique(images)) == {0, 255}


def test_every_fractal_category_passes_the_filling_rate_filter():
  table = generate.category_table("fractal", 0, 10)
  num_maps = (table != 0).any(-1).sum(-1)
  assert ((fractals.MIN_MAPS <= num_maps) & (num_maps <= fractals.MAX_MAPS)).all()
  rngs = [np.random.default_rng([0, c]) for c in range(10)]
  rate = fractals.filling_rate(fractals.chaos_game(table, rngs, fractals.SEARCH_POINTS))
  assert (rate >= fractals.MIN_FILLING_RATE - 0.05).all(), rate


@pytest.mark.parametrize("family", FAMILIES)
def test_categories_are_told_apart_by_a_nearest_mean_classifier(family):
  categories, instances = np.repeat(np.arange(10), 16), np.tile(np.arange(16), 10)
  images = _render(family, categories, instances, size=32, colour=False).max(-1) > 0
  features = images.reshape(160, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(160, -1)
  train = instances < 8
  means = np.stack([features[train & (categories == c)].mean(0) for c in range(10)])
  predicted = ((features[~train, None] - means) ** 2).sum(-1).argmin(-1)
  assert (predicted == categories[~train]).mean() > 0.3  # chance: 0.1


@pytest.mark.parametrize("start_step", [1, 3])
def test_resumed_train_stream_sees_the_batches_of_an_unbroken_one(start_step, sharding):
  config = _config("contours", instances_per_category=0)

  def batches(start: int, steps: int) -> list:
    stream = input_pipeline.train_batches(config, global_batch_size=8, seed=0, start_step=start,
                                          sharding=sharding)
    return [jax.tree.map(np.asarray, b) for b in itertools.islice(stream, steps)]

  chex.assert_trees_all_equal(batches(start_step, 4 - start_step), batches(0, 4)[start_step:])


def test_bad_split_and_counts_are_errors_naming_the_key():
  with pytest.raises(ValueError, match="has splits"):
    data_sources.load(_config("fractal"), "validation")
  with pytest.raises(ValueError, match="instances_per_category=-1"):
    data_sources.load(_config("fractal", instances_per_category=-1), "train")


def test_exported_image_folder_holds_the_images_the_source_renders(tmp_path):
  written = export.export("contours", 3, {"train": 2, "test": 1}, 16, tmp_path, colour=False)
  assert written == 9
  loaded = data_sources.load(_config("contours", num_categories=3, image_size=16, colour=False,
                                     eval_instances_per_category=1), "test")
  rendered = list(loaded.dataset.map(loaded.decode).as_numpy_iterator())
  for example in rendered:
    saved = np.asarray(Image.open(tmp_path / "test" / f"{example['label']:05d}" / "000000.png"))
    np.testing.assert_array_equal(saved, example["image"])
  folder = data_sources.load(_config("contours", source="image_folder", data_dir=str(tmp_path),
                                     num_classes=3), "train")
  assert folder.num_examples == 6 and folder.num_classes == 3
