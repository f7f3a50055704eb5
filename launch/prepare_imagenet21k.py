"""Builds the TFDS data set `imagenet21k` (what configs/imagenet21k.py reads) from extracted images, once.

  python launch/prepare_imagenet21k.py --images=/mnt/winter21_whole --data_dir=gs://BUCKET/tensorflow_datasets

`--images` holds one folder per class (the winter-2021 release's WordNet ids, each tar extracted into
its folder); class index = position in the sorted folder names. The JPEG bytes are stored as they are
(no decoding or re-encoding) in shuffled order with a fixed seed, so that `train[:102400]` is a
random held-out set. Then every host reads its own TFRecord files and the input pipeline shuffles
those files per epoch.
"""

import argparse

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

NAME = "imagenet21k"
_ORDER_SEED = 21843


def build(images: str, data_dir: str, version: str = "1.0.0") -> tfds.core.DatasetBuilder:
  classes = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(images)
                   if tf.io.gfile.isdir(f"{images}/{name}"))
  if not classes:
    raise FileNotFoundError(f"{images} holds no class folders (expected {images}/<class>/<image>).")
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = sorted(tf.io.gfile.glob(f"{images}/{name}/*"))
    paths += files
    labels += [label] * len(files)
  order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
  examples = tf.data.Dataset.from_tensor_slices(
      (np.array(paths)[order], np.array(labels, np.int64)[order])).map(
          lambda path, label: {"image": tf.io.read_file(path), "label": label},
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(names=classes)})
  return tfds.dataset_builders.store_as_tfds_dataset(
      name=NAME, version=version, features=features, split_datasets={"train": examples},
      data_dir=data_dir, disable_shuffling=True)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", required=True, help="folder (local or gs://) of class folders")
  parser.add_argument("--data_dir", required=True, help="TFDS_DATA_DIR to write into")
  args = parser.parse_args()
  builder = build(args.images, args.data_dir)
  print(f"{NAME}: {builder.info.splits['train'].num_examples} images in {builder.data_dir}")
