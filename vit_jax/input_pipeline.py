"""Batches for the train loop: data source -> tf.data -> per-process batches -> global jax.Arrays.

The train loop calls `get_info`, `train_batches` and `eval_passes`. Batches are dicts of global
jax.Arrays sharded along their first axis as `sharding` says: 'image' float32 [B, S, S, 3] in
[-1, 1], 'label' float32 [B, num_classes] (one-hot, or mixed by mixup), and for evaluation 'mask'
float32 [B] (1 for real examples, 0 for the padding of the last batches).

Training data order is a pure function of (seed, step), so a run resumed at `start_step` sees
exactly the batches an unbroken run would have seen. Each epoch, each process reads its own files
(tfds shards; other sources are one file) in an order drawn from (seed, epoch, process), cuts that
stream into blocks of `dataset.shuffle_buffer` examples and shuffles each block entirely. Resuming
opens no file before the resume point's block, and skips undecoded the examples of the block
before it (fewer than one block): see `_train_examples`.

Keys of config.dataset read here (configs/common.py): shuffle_buffer (examples per shuffle block:
the memory of one block of undecoded examples), parallel_files (tfds files read at once, in the same
order as one by one; each is read ahead whole), prefetch (batches put on the devices ahead), threads
and ram_budget_gb (tf.data's private thread pool and autotune RAM budget, for the train and the eval
pipeline alike). The progress line reports the share of time spent waiting for input
(metrics.Progress).
"""

import collections
from collections.abc import Callable, Iterator
import dataclasses
import math
import os

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from vit_jax import data_sources
from vit_jax import preprocess

# TensorFlow only feeds the input pipeline; the accelerators belong to JAX.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TensorFlow already ran; it may hold GPU memory that JAX then lacks.
  logging.warning("TensorFlow started before vit_jax.input_pipeline was imported and may use the "
                  "GPUs; import this module before running any TensorFlow op.")

_INFINITE = np.iinfo(np.int64).max
# Salts that keep the random streams of shuffling, augmentation, mixup and file order apart.
_SHUFFLE, _AUGMENT, _MIXUP, _FILE_ORDER = range(4)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes the train loop needs (examples summed over all processes)."""
  num_train_examples: int
  num_eval_examples: int
  num_classes: int


def get_info(data_config: ml_collections.ConfigDict) -> DatasetInfo:
  train = _load(data_config, data_config.train_split)
  evaluation = _load(eval_data_config(data_config), data_config.eval_split)
  return DatasetInfo(
      num_train_examples=train.num_split_examples,
      num_eval_examples=evaluation.num_split_examples,
      num_classes=data_config.num_classes,
  )


def train_batches(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    sharding: jax.sharding.NamedSharding,
) -> Iterator[dict[str, jax.Array]]:
  """Endless training batches; the first one is the batch of step `start_step`."""
  local_batch_size = _local_batch_size(global_batch_size, sharding, "config.batch_size")
  dataset = _train_dataset(data_config, local_batch_size, seed, start_step)
  return _to_global(dataset, sharding, data_config.prefetch)


def eval_passes(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
) -> Callable[[], Iterator[dict[str, jax.Array]]]:
  """f() -> one pass over the eval split; every process yields the same number of batches. The split is
  read and decoded here, once: an evaluator called at every checkpoint does not unpack its files again
  (Fashion-MNIST's validation slice took 0.3 s to decompress, half of each evaluation of a small model)."""
  local_batch_size = _local_batch_size(global_batch_size, sharding, "config.eval_batch_size")
  dataset = _eval_dataset(data_config, local_batch_size)
  return lambda: _to_global(dataset, sharding, data_config.prefetch)


def eval_data_config(data_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The data config of the eval split: another data set or label feature where the config names
  one (`eval_name`, `eval_label`: ImageNet-ReaL scores an ImageNet run on other labels)."""
  if not data_config.get("eval_name") and not data_config.get("eval_label"):
    return data_config
  config = ml_collections.ConfigDict(data_config.to_dict())
  config.name = data_config.eval_name or data_config.name
  config.label = data_config.eval_label or data_config.get("label", "label")
  return config


def _load(data_config: ml_collections.ConfigDict, split: str) -> data_sources.Source:
  source = data_sources.load(data_config, split)
  if source.num_classes > data_config.num_classes:
    raise ValueError(
        f"Data set {data_config.name or data_config.source!r} has {source.num_classes} classes, "
        f"but config.dataset.num_classes={data_config.num_classes}: raise it.")
  return source


def _local_batch_size(
    global_batch_size: int, sharding: jax.sharding.NamedSharding, config_key: str) -> int:
  """This process's rows of a global batch, checked against the mesh and the processes."""
  axis = sharding.spec[0] if sharding.spec else None
  axis_names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
  num_shards = math.prod(sharding.mesh.shape[name] for name in axis_names)
  num_processes = jax.process_count()
  if global_batch_size <= 0 or global_batch_size % num_shards:
    raise ValueError(
        f"Batch size {global_batch_size} ({config_key}) does not divide over the {num_shards} "
        f"devices of the batch axis {axis_names} of the mesh {dict(sharding.mesh.shape)}: set "
        f"{config_key} to a multiple of {num_shards}, or change config.mesh.")
  if global_batch_size % num_processes:
    raise ValueError(f"Batch size {global_batch_size} ({config_key}) does not divide over "
                     f"{num_processes} processes: set it to a multiple of {num_processes}.")
  local_rows = {index[0].indices(global_batch_size)[:2] for index in
                sharding.addressable_devices_indices_map((global_batch_size,)).values()}
  local_batch_size = sum(stop - start for start, stop in local_rows)
  if local_batch_size * num_processes != global_batch_size:
    raise ValueError(
        f"The batch axis {axis_names} of the mesh {dict(sharding.mesh.shape)} must spread over all "
        f"{num_processes} processes (each reads its own examples); change config.mesh.")
  return local_batch_size


def _seed(seed: int, salt: int, counter: tf.Tensor) -> tf.Tensor:
  """A stateless seed [2] from (config seed, this process, stream salt, counter)."""
  key = tf.constant([seed, jax.process_index()], tf.int64)
  key = tf.random.experimental.stateless_fold_in(key, salt)
  return tf.random.experimental.stateless_fold_in(key, counter)


def _decoder(source: data_sources.Source, batch_size: int) -> tuple[
    Callable[[tf.data.Dataset], tf.data.Dataset], Callable[[data_sources.Features], data_sources.Features]]:
  """How to decode a stream of the source's elements: (stream -> stream, per-example decode).

  Sources that render a batch at once (`decode_batch`) decode in batches of `batch_size` within the
  stream, and the per-example step is then the identity; the others decode example by example.
  """
  if source.decode_batch is None:
    return lambda examples: examples, source.decode

  def decode_in_batches(examples: tf.data.Dataset) -> tf.data.Dataset:
    return examples.batch(batch_size).map(
        source.decode_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()

  return decode_in_batches, lambda example: example


def _train_dataset(data_config: ml_collections.ConfigDict, local_batch_size: int, seed: int,
                   start_step: int) -> tf.data.Dataset:
  """This process's batches from step `start_step` on, without decoding any skipped example."""
  source = _load(data_config, data_config.train_split)
  transform = preprocess.train_transform(
      data_config.train_augment, data_config.image_size, data_config.num_classes,
      random_flip=data_config.random_flip,
      randaugment=((data_config.randaugment_layers, data_config.randaugment_magnitude)
                   if data_config.randaugment_layers else None),
      randaugment_reference_size=data_config.get("randaugment_reference_size", 0))
  block_size = max(1, min(data_config.shuffle_buffer, source.num_examples))
  examples_decoded, decode = _decoder(source, local_batch_size)

  def augment(position: tf.Tensor, example: data_sources.Features) -> data_sources.Features:
    return transform(decode(example), _seed(seed, _AUGMENT, position))

  first_example = start_step * local_batch_size
  examples = _train_examples(source, seed, first_example, block_size,
                             data_config.get("parallel_files", 4))  # configs/common.py's default
  examples = examples_decoded(examples)
  positions = tf.data.Dataset.range(first_example, _INFINITE)
  dataset = tf.data.Dataset.zip(positions, examples).map(
      augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(local_batch_size, drop_remainder=True)
  if data_config.mixup_alpha > 0 or data_config.cutmix_alpha > 0:

    def mix(step: tf.Tensor, batch: data_sources.Features) -> data_sources.Features:
      """Mixup, CutMix, or with both alphas one of the two per batch (a fair coin, as timm)."""
      mix_seed = _seed(seed, _MIXUP, step)
      if data_config.cutmix_alpha <= 0:
        return preprocess.mixup(batch, data_config.mixup_alpha, mix_seed)
      if data_config.mixup_alpha <= 0:
        return preprocess.cutmix(batch, data_config.cutmix_alpha, mix_seed)
      coin_seed = tf.random.experimental.stateless_fold_in(mix_seed, 1)
      return tf.cond(tf.random.stateless_uniform([], seed=coin_seed) < 0.5,
                     lambda: preprocess.mixup(batch, data_config.mixup_alpha, mix_seed),
                     lambda: preprocess.cutmix(batch, data_config.cutmix_alpha, mix_seed))

    steps = tf.data.Dataset.range(start_step, _INFINITE)
    dataset = tf.data.Dataset.zip(steps, dataset).map(
        mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(dataset_options(data_config))


def _train_examples(source: data_sources.Source, seed: int, first_example: int, block_size: int,
                    parallel_files: int) -> tf.data.Dataset:
  """This process's undecoded training elements, endless, from its `first_example`-th on.

  Epoch e reads this process's files (`source.files`, else `source.dataset` as one file) in an
  order drawn from (seed, process, e), and cuts that stream into blocks of `block_size` examples,
  each shuffled entirely by a seed drawn from (seed, process, e, block). The block is the unit of
  resumption: a run resumed inside one reads from the block's first example on, opens none of the
  files before it, and skips (undecoded) the fewer than `block_size` examples of the block before
  its resume point. `parallel_files` files are read at once, yet their examples come in the same
  order as one by one: each file is read whole into memory while it waits its turn.
  """
  files = source.files or data_sources.Files(
      sizes=(source.num_examples,), read=lambda index, skip: source.dataset.skip(skip))
  num_files = len(files.sizes)
  sizes = tf.constant(files.sizes, tf.int64)
  first_epoch, position = divmod(first_example, source.num_examples)
  block_start = position - position % block_size

  def shuffled(epoch: tf.Tensor, block: tf.Tensor, window: data_sources.Features) -> tf.data.Dataset:
    key = tf.random.experimental.stateless_fold_in(_seed(seed, _SHUFFLE, epoch), block)
    block_seed = tf.random.stateless_uniform([], seed=key, minval=None, maxval=None, dtype=tf.int64)
    return tf.data.Dataset.zip(window).shuffle(block_size, seed=block_seed)

  def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
    start = tf.where(epoch == first_epoch, tf.constant(block_start, tf.int64), 0)
    order = _file_order(num_files, seed, epoch)
    ends = tf.cumsum(tf.gather(sizes, order))
    passed = tf.reduce_sum(tf.cast(ends <= start, tf.int64))  # files wholly before `start`
    skip_in_first = start - tf.concat([[0], ends], 0)[passed]
    skips = tf.concat([[skip_in_first], tf.zeros([num_files - passed - 1], tf.int64)], 0)
    pieces = tf.data.Dataset.from_tensor_slices((order[passed:], skips))
    if min(parallel_files, num_files) > 1:  # one block per file: the order of `flat_map`
      examples = pieces.interleave(
          files.read, cycle_length=parallel_files, block_length=max(files.sizes),
          num_parallel_calls=parallel_files, deterministic=True)
    else:
      examples = pieces.flat_map(files.read)
    blocks = examples.window(block_size).enumerate(start // block_size)
    return blocks.flat_map(lambda block, window: shuffled(epoch, block, window))

  epochs = tf.data.Dataset.range(first_epoch, _INFINITE)
  return epochs.flat_map(epoch_examples).skip(position - block_start)


def _file_order(num_files: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
  """The order in which this process reads its files in `epoch`: int64 [num_files]."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_files, dtype=tf.int64), seed=_seed(seed, _FILE_ORDER, epoch))


def _eval_dataset(
    data_config: ml_collections.ConfigDict, local_batch_size: int) -> tf.data.Dataset:
  """This process's eval batches, padded with masked-out examples to the same count everywhere."""
  source = _load(eval_data_config(data_config), data_config.eval_split)
  transform = preprocess.eval_transform(data_config.image_size, data_config.num_classes,
                                       data_config.get("eval_preprocess", "central_crop"))

  examples_decoded, decode = _decoder(source, local_batch_size)

  def prepare(example: data_sources.Features) -> data_sources.Features:
    return {**transform(decode(example)), "mask": tf.constant(1.0)}

  dataset = examples_decoded(source.dataset).map(
      prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  padding = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), dataset.element_spec))
  # The largest shard of a split cut evenly over processes (data_sources.process_range) sets the
  # number of batches, so every process takes part in every step of the evaluation.
  largest_shard = -(-source.num_split_examples // jax.process_count())
  num_batches = -(-largest_shard // local_batch_size)
  dataset = dataset.concatenate(padding.repeat()).take(num_batches * local_batch_size)
  return dataset.batch(local_batch_size).prefetch(tf.data.AUTOTUNE).with_options(
      dataset_options(data_config))


def dataset_options(data_config: ml_collections.ConfigDict) -> tf.data.Options:
  """A private thread pool per pipeline (train and eval do not starve each other), a RAM budget for
  prefetch's self-sized buffers (on a big host the default, half the RAM, can crowd out the rest), and
  no autotuning thread."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = data_config.get("threads", 0) or os.cpu_count() or 1
  # Autotuning's model thread wakes only at its next optimisation period when the iterator goes (TF
  # 2.21): closing a stream after a 600-step run stalled 7-15 s. Without it, maps run on the whole
  # private pool and prefetch keeps its own tuner, at the same images/s (benchmarks/RESULTS.md).
  options.autotune.enabled = False
  if data_config.get("ram_budget_gb", 0):
    options.autotune.ram_budget = int(data_config.ram_budget_gb * 2**30)
  return options


def _to_global(dataset: tf.data.Dataset, sharding: jax.sharding.NamedSharding,
               prefetch: int) -> Iterator[dict[str, jax.Array]]:
  """Turns local numpy batches into global jax.Arrays, `prefetch` batches ahead on the devices."""
  ahead = collections.deque()
  for batch in dataset.as_numpy_iterator():
    ahead.append({key: jax.make_array_from_process_local_data(sharding, value)
                  for key, value in batch.items()})
    if len(ahead) > prefetch:
      yield ahead.popleft()
  yield from ahead
