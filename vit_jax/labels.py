"""Labels that a data set does not store but that its features define: VTAB's structured tasks.

Five VTAB-1k tasks classify a quantity derived from a tfds data set's other features (Zhai et al.
2019; the derivations of the VTAB task package): object counts, binned distances, coarser position and
orientation classes. `config.dataset.label` names either a feature of the data set (`label`,
`label_azimuth`, the multi-label `real_label` of ImageNet-ReaL) or one of `DERIVED` below.
"""

from collections.abc import Callable
import dataclasses

import numpy as np
import tensorflow as tf

Features = dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DerivedLabel:
  dataset: str  # the tfds data set (name without version or config) whose features it reads
  num_classes: int
  fn: Callable[[Features], tf.Tensor]  # undecoded tfds example -> int64 []


def _bin(value: tf.Tensor, thresholds: np.ndarray) -> tf.Tensor:
  """The index of the last threshold below `value`: bins [t0, t1), [t1, t2), ..."""
  return tf.reduce_max(tf.where(thresholds - value < 0))


def _clevr_count(x: Features) -> tf.Tensor:
  """3 to 10 objects -> classes 0 to 7."""
  return tf.cast(tf.size(x["objects"]["size"]) - 3, tf.int64)


def _clevr_distance(x: Features) -> tf.Tensor:
  """Depth of the closest object, in 6 bins."""
  depth = tf.reduce_min(x["objects"]["pixel_coords"][:, 2])
  return _bin(depth, np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0], np.float32))


def _kitti_distance(x: Features) -> tf.Tensor:
  """Depth of the closest car, van or truck (1,000 m if there is none), in 4 bins."""
  vehicles = x["objects"]["type"] < 3
  depths = tf.boolean_mask(x["objects"]["location"][:, 2], vehicles)
  depth = tf.reduce_min(tf.concat([depths, tf.constant([1000.0])], axis=0))
  return _bin(depth, np.array([-100.0, 8.0, 20.0, 999.0], np.float32))


def _coarser(feature: str, original: int, classes: int) -> Callable[[Features], tf.Tensor]:
  """`original` classes of `feature` merged into `classes` equal ranges."""
  return lambda x: tf.cast(tf.math.floor(
      tf.cast(x[feature], tf.float32) * classes / original), tf.int64)


DERIVED = {
    "clevr_count": DerivedLabel("clevr", 8, _clevr_count),
    "clevr_distance": DerivedLabel("clevr", 6, _clevr_distance),
    "kitti_distance": DerivedLabel("kitti", 4, _kitti_distance),
    "dsprites_location": DerivedLabel("dsprites", 16, _coarser("label_x_position", 32, 16)),
    "dsprites_orientation": DerivedLabel("dsprites", 16, _coarser("label_orientation", 40, 16)),
}


def label_fn(label: str, dataset_name: str,
             features: dict) -> tuple[Callable[[Features], tf.Tensor], int]:
  """f(undecoded example) -> label tensor (int64 [] or, for multi-label features, int64 [k]), and
  the number of classes, for `config.dataset.label` on the tfds data set `dataset_name`."""
  if label in DERIVED:
    derived = DERIVED[label]
    base_name = dataset_name.split("/")[0].split(":")[0]
    if base_name != derived.dataset:
      raise ValueError(f"config.dataset.label={label!r} is derived from the features of "
                       f"{derived.dataset!r}, not of {dataset_name!r}.")
    return derived.fn, derived.num_classes
  if label not in features:
    class_features = sorted(k for k, v in features.items() if _num_classes(v))
    raise ValueError(
        f"config.dataset.label={label!r} is neither a feature of {dataset_name!r} (its class "
        f"features: {class_features}) nor a derived label ({sorted(DERIVED)}).")
  num_classes = _num_classes(features[label])
  if not num_classes:
    raise ValueError(f"Feature {label!r} of {dataset_name!r} is not a class label "
                     f"({type(features[label]).__name__}).")
  return (lambda x: tf.cast(x[label], tf.int64)), num_classes


def _num_classes(feature) -> int | None:
  """Classes of a ClassLabel feature or of a Sequence of them (multi-label), else None."""
  feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) -> ClassLabel
  return getattr(feature, "num_classes", None)
