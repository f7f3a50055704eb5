"""Input pipeline: global batches on 8 devices, resumable order, eval padding, start-up errors."""

import collections
import itertools
import re

import chex
import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from vit_jax import data_sources
from vit_jax import input_pipeline


def _config(**overrides) -> ml_collections.ConfigDict:
  config = common.get_config().dataset
  config.update(dict(source="digits", image_size=8, train_augment="central_crop"))
  config.update(overrides)
  return config


def _train(config, sharding, *, steps: int, start_step: int = 0, seed: int = 0, batch: int = 16):
  batches = input_pipeline.train_batches(
      config, global_batch_size=batch, seed=seed, start_step=start_step, sharding=sharding)
  return [jax.tree.map(np.asarray, b) for b in itertools.islice(batches, steps)]


def _to_uint8(images: np.ndarray) -> np.ndarray:
  return np.round((images + 1) * 127.5).astype(np.uint8)


def test_train_batches_are_global_arrays_sharded_over_the_mesh(sharding):
  config = _config(train_augment="inception_crop", image_size=12, mixup_alpha=0.2)
  batch = next(input_pipeline.train_batches(
      config, global_batch_size=16, seed=0, start_step=0, sharding=sharding))
  chex.assert_shape(batch["image"], (16, 12, 12, 3))
  chex.assert_shape(batch["label"], (16, 10))
  chex.assert_type([batch["image"], batch["label"]], np.float32)
  for array in batch.values():
    assert array.sharding == sharding
    assert [shard.data.shape[0] for shard in array.addressable_shards] == [2] * 8
  assert -1.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
  np.testing.assert_allclose(np.sum(batch["label"], axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("start_step", [2, 4, 5])
def test_resumed_run_sees_the_batches_of_an_unbroken_run(sharding, start_step):
  # 40 examples in batches of 16: epochs end inside batches 2 and 7, and before batch 5.
  config = _config(train_split="train[:40]", train_augment="inception_crop", mixup_alpha=0.2)
  unbroken = _train(config, sharding, steps=7)
  resumed = _train(config, sharding, steps=7 - start_step, start_step=start_step)
  chex.assert_trees_all_equal(resumed, unbroken[start_step:])


def test_resume_reads_image_files_by_position(sharding, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  for i in range(10):
    path = tmp_path / "train" / f"class{i % 2}" / f"{i}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (25 * i, 0, 0)).save(path)
  config = _config(source="image_folder", data_dir=str(tmp_path), num_classes=2)
  unbroken = _train(config, sharding, steps=6, batch=8)
  chex.assert_trees_all_equal(_train(config, sharding, steps=3, start_step=3, batch=8),
                              unbroken[3:])


def _fingerprints(images: np.ndarray) -> collections.Counter:
  return collections.Counter(image.tobytes() for image in _to_uint8(images))


def test_each_epoch_is_a_new_permutation_of_the_split(sharding):
  config = _config(train_split="train[:32]")
  source = data_sources.load(config, "train[:32]")
  split = collections.Counter(
      x["image"].tobytes() for x in source.dataset.map(source.decode).as_numpy_iterator())
  batches = _train(config, sharding, steps=4)
  epochs = [np.concatenate([b["image"] for b in batches[i:i + 2]]) for i in (0, 2)]
  assert _fingerprints(epochs[0]) == _fingerprints(epochs[1]) == split
  assert not np.array_equal(epochs[0], epochs[1])


def test_seed_changes_the_order(sharding):
  first, other = (_train(_config(), sharding, steps=1, seed=seed)[0] for seed in (0, 1))
  assert not np.array_equal(first["image"], other["image"])


def test_prefetch_changes_timing_not_data(sharding):
  chex.assert_trees_all_equal(_train(_config(prefetch=0), sharding, steps=3),
                              _train(_config(prefetch=3), sharding, steps=3))


def test_tfds_data_set_under_mock_data(sharding):
  with tfds.testing.mock_data(num_examples=16):
    config = _config(source="tfds", name="cifar10", train_augment="squash_crop")
    batch = _train(config, sharding, steps=3, batch=8)[-1]
  chex.assert_shape(batch["image"], (8, 8, 8, 3))


@pytest.fixture(scope="module")
def sharded_tfds(tmp_path_factory) -> ml_collections.ConfigDict:
  """A real prepared tfds data set of 24 distinct 6x6 images in 6 files of 4."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  images = np.random.default_rng(0).integers(0, 256, (24, 6, 6, 3), dtype=np.uint8)
  builder = tfds.dataset_builders.TfDataBuilder(
      name="sharded_images", config="default", version="1.0.0", data_dir=data_dir,
      split_datasets={"train": tf.data.Dataset.from_tensor_slices(
          {"image": images, "label": np.arange(24) % 4})},
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(6, 6, 3)),
          "label": tfds.features.ClassLabel(num_classes=4),
      }),
  )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=6))
  assert builder.info.splits["train"].shard_lengths == [4] * 6
  return _config(source="tfds", name="sharded_images", data_dir=data_dir, num_classes=4,
                 image_size=6, random_flip=False, eval_split="train")


@pytest.fixture
def reads(monkeypatch) -> dict[str, list[str]]:
  """Records, in order, each tfds file opened and each record read from one (by file name)."""
  log = {"opened": [], "records": []}
  open_records = data_sources._open_records  # pylint: disable=protected-access

  def note(kind: str, name: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    def append(name, value):
      log[kind].append(name.numpy().decode().rsplit("-", 3)[-3])  # the file's number: 00003
      return value
    return tf.py_function(append, [name, value], value.dtype)

  def recording_open(file_format, filename):
    opened = tf.data.Dataset.from_tensors(filename).map(lambda name: note("opened", name, name))
    return opened.flat_map(lambda name: open_records(file_format, name).map(
        lambda record: note("records", name, record)))

  monkeypatch.setattr(data_sources, "_open_records", recording_open)
  return log


def _undecoded_epochs(config, epochs: int, *, seed: int = 0, first_example: int = 0,
                      parallel_files: int = 1) -> tuple[data_sources.Source, list[bytes]]:
  """Whole epochs of training elements; files opened in turn (parallel_files=1) log in order."""
  source = data_sources.load(config, config.train_split)
  examples = input_pipeline._train_examples(  # pylint: disable=protected-access
      source, seed, first_example, block_size=5, parallel_files=parallel_files)
  count = epochs * source.num_examples - first_example
  return source, [x["image"] for x in examples.take(count).as_numpy_iterator()]


def test_each_epoch_reads_the_process_files_in_an_order_drawn_from_the_seed(
    sharded_tfds, reads, monkeypatch):
  shards, orders = [], {}
  for index, seeds in ((0, (0, 0, 1)), (1, (0,))):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    for run, seed in enumerate(seeds):
      reads["opened"].clear()
      source, images = _undecoded_epochs(sharded_tfds, epochs=3, seed=seed)
      orders[index, run] = [tuple(reads["opened"][i:i + 3]) for i in (0, 3, 6)]
    shard = {x["image"] for x in source.dataset.as_numpy_iterator()}
    assert len(shard) == source.num_examples == 12 and len(reads["opened"]) == 9
    for epoch in range(3):  # each epoch: this process's 12 examples, each once
      assert sorted(images[12 * epoch:12 * (epoch + 1)]) == sorted(shard)
    shards.append(shard)
  assert len(shards[0] | shards[1]) == 24 and not shards[0] & shards[1]
  assert sorted(orders[0, 0][0]) == ["00000", "00001", "00002"]
  assert sorted(orders[1, 0][0]) == ["00003", "00004", "00005"]
  assert orders[0, 0] == orders[0, 1]  # a pure function of (seed, epoch, process)
  assert len(set(orders[0, 0])) > 1 and orders[0, 0] != orders[0, 2]  # epochs and seeds change it
  assert len(set(orders[1, 0])) > 1


def test_resumed_tfds_run_opens_only_the_files_it_needs(sharded_tfds, reads):
  # Files of 4 in blocks of 5: example 13 lies in the block that starts at example 10, in the third
  # file of the epoch's order; the first two are never opened.
  _, unbroken = _undecoded_epochs(sharded_tfds, epochs=1)
  order = list(reads["opened"])
  reads["opened"].clear(), reads["records"].clear()
  _, resumed = _undecoded_epochs(sharded_tfds, epochs=1, first_example=13)
  assert resumed == unbroken[13:]
  assert reads["opened"] == order[2:]
  assert len(reads["records"]) == 24 - 8  # 2 skipped in the first file opened, 3 in the block
  assert collections.Counter(reads["records"]) == {name: 4 for name in order[2:]}
  reads["opened"].clear(), reads["records"].clear()
  _, in_parallel = _undecoded_epochs(sharded_tfds, epochs=1, first_example=13, parallel_files=4)
  assert in_parallel == resumed and sorted(reads["opened"]) == sorted(order[2:])
  assert collections.Counter(reads["records"]) == {name: 4 for name in order[2:]}


@pytest.mark.parametrize("start_step", [2, 4])
def test_resumed_tfds_run_sees_the_batches_of_an_unbroken_run(sharding, sharded_tfds, start_step):
  # Batches of 8 from 24 examples in files of 4 and shuffle blocks of 5: step 4 starts in epoch 2.
  config = ml_collections.ConfigDict(sharded_tfds.to_dict())
  config.update(shuffle_buffer=5, train_augment="inception_crop", parallel_files=4)
  unbroken = _train(config, sharding, steps=6, batch=8)
  resumed = _train(config, sharding, steps=6 - start_step, start_step=start_step, batch=8)
  chex.assert_trees_all_equal(resumed, unbroken[start_step:])
  config.parallel_files = 1  # files read one by one: the same data
  chex.assert_trees_all_equal(_train(config, sharding, steps=6, batch=8), unbroken)


def test_an_eval_pass_covers_the_split_once_then_pads(sharding):
  config = _config()
  batches = list(input_pipeline.eval_passes(config, global_batch_size=64, sharding=sharding)())
  assert len(batches) == 5  # 300 examples
  for batch in batches:
    assert batch["mask"].sharding == sharding and batch["mask"].dtype == np.float32
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(mask, np.arange(320) < 300)
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert not images[300:].any() and not labels[300:].any()
  source = data_sources.load(config, "test")
  expected = list(source.dataset.map(source.decode).as_numpy_iterator())
  np.testing.assert_array_equal(_to_uint8(images[:300]), [x["image"] for x in expected])
  np.testing.assert_array_equal(labels[:300].argmax(-1), [x["label"] for x in expected])


def test_eval_passes_read_the_split_once_and_repeat_the_same_batches(sharding, monkeypatch):
  loads = []
  load = data_sources.load
  monkeypatch.setattr(data_sources, "load", lambda *args: loads.append(args[1]) or load(*args))
  passes = input_pipeline.eval_passes(_config(), global_batch_size=64, sharding=sharding)
  first, second = ([jax.tree.map(np.asarray, b) for b in passes()] for _ in range(2))
  assert loads == ["test"]
  chex.assert_trees_all_equal(second, first)
  rebuilt = input_pipeline.eval_passes(_config(), global_batch_size=64, sharding=sharding)
  chex.assert_trees_all_equal(first, [jax.tree.map(np.asarray, b) for b in rebuilt()])


def test_get_info_counts_both_splits():
  info = input_pipeline.get_info(_config(train_split="train[:1000]"))
  assert info == input_pipeline.DatasetInfo(
      num_train_examples=1000, num_eval_examples=300, num_classes=10)


@pytest.mark.parametrize("batch", [12, 4])
def test_batch_that_does_not_divide_over_the_devices_raises(sharding, batch):
  message = re.escape(f"Batch size {batch} (config.batch_size) does not divide over the 8 devices")
  with pytest.raises(ValueError, match=message + ".*multiple of 8"):
    input_pipeline.train_batches(
        _config(), global_batch_size=batch, seed=0, start_step=0, sharding=sharding)
  with pytest.raises(ValueError, match=r"config\.eval_batch_size"):
    input_pipeline.eval_passes(_config(), global_batch_size=batch, sharding=sharding)


def test_empty_split_raises_at_start_up(sharding):
  with pytest.raises(ValueError, match=re.escape("'digits' split 'train[:0]' has no examples")):
    input_pipeline.train_batches(_config(train_split="train[:0]"), global_batch_size=8, seed=0,
                                 start_step=0, sharding=sharding)


def test_too_few_classes_in_the_config_raises():
  with pytest.raises(ValueError, match="10 classes, but config.dataset.num_classes=5"):
    input_pipeline.get_info(_config(num_classes=5))


def test_train_and_eval_pipelines_get_a_private_thread_pool_the_ram_budget_and_no_autotuning():
  """...and no autotuning thread, which held up closing a stream for seconds (dataset_options)."""
  config = _config(threads=3, ram_budget_gb=1.5)
  for dataset in (  # pylint: disable=protected-access
      input_pipeline._train_dataset(config, local_batch_size=2, seed=0, start_step=0),
      input_pipeline._eval_dataset(config, local_batch_size=2)):
    assert dataset.options().threading.private_threadpool_size == 3
    assert dataset.options().autotune.ram_budget == int(1.5 * 2**30)
    assert dataset.options().autotune.enabled is False
