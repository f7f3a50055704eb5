"""Labels from other features: VTAB's derived labels, other label features, ImageNet-ReaL label sets."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from configs.transfer import imagenet2012_real
from configs.transfer import vtab
from vit_jax import data_sources
from vit_jax import input_pipeline
from vit_jax import labels
from vit_jax import preprocess
from vit_jax import sharding


def _derive(name, example):
  return int(labels.DERIVED[name].fn(tf.nest.map_structure(tf.constant, example)))


def _clevr(depths):
  return {"objects": {"size": np.zeros(len(depths), np.int64),
                      "pixel_coords": np.array([[10., 20., d] for d in depths], np.float32)}}


@pytest.mark.parametrize("count", [3, 7, 10])
def test_clevr_count_is_the_number_of_objects_minus_three(count):
  assert _derive("clevr_count", _clevr([9.] * count)) == count - 3


@pytest.mark.parametrize("depths, expected", [
    ([12., 7.9, 9.], 0), ([8.2, 11.], 1), ([8.7], 2), ([9.2, 9.9], 3), ([9.6], 4), ([10.5, 13.], 5)])
def test_clevr_distance_bins_the_closest_object(depths, expected):
  assert _derive("clevr_distance", _clevr(depths)) == expected


@pytest.mark.parametrize("types, depths, expected", [
    ([0, 1], [25., 12.], 1),      # a van at 12 m
    ([4, 0], [3., 30.], 2),       # the pedestrian at 3 m does not count; the car at 30 m does
    ([2], [5.], 0),               # a truck at 5 m
    ([5, 6], [2., 4.], 3),        # no vehicle: 1,000 m
])
def test_kitti_distance_bins_the_closest_vehicle(types, depths, expected):
  location = np.array([[0., 0., d] for d in depths], np.float32)
  example = {"objects": {"type": np.array(types, np.int64), "location": location}}
  assert _derive("kitti_distance", example) == expected


def test_dsprites_positions_and_orientations_merge_into_16_classes():
  positions = [_derive("dsprites_location", {"label_x_position": np.int64(x)}) for x in range(32)]
  orientations = [_derive("dsprites_orientation", {"label_orientation": np.int64(o)})
                  for o in range(40)]
  assert positions == [x // 2 for x in range(32)]
  assert orientations == [int(o * 16 / 40) for o in range(40)]
  assert np.bincount(orientations).tolist() == [3, 2, 3, 2] * 4


def test_every_vtab_task_label_is_a_feature_or_a_derivation_of_its_data_set():
  for task, (tfds_name, num_classes, _, label, _) in vtab.TASKS.items():
    if label in labels.DERIVED:
      assert labels.DERIVED[label].dataset == tfds_name.split("/")[0], task
      assert labels.DERIVED[label].num_classes == num_classes, task
    assert vtab.get_config(task).dataset.label == label


def test_derived_label_of_another_data_set_fails_with_the_names():
  with pytest.raises(ValueError, match="'clevr_count' is derived from the features of 'clevr', not of "
                                       "'kitti:3.3.0'"):
    labels.label_fn("clevr_count", "kitti:3.3.0", {})


def test_unknown_label_feature_lists_the_class_features():
  config = common.get_config().dataset
  config.update(source="tfds", name="smallnorb", label="label_azimut")
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(ValueError, match=r"'label_azimut' is neither a feature of 'smallnorb' \(its "
                                         r"class features: \['instance', 'label_azimuth', 'label_category', "
                                         r"'label_elevation', 'label_lighting'\]\)"):
      data_sources.load(config, "train")


def test_a_label_feature_other_than_label_is_read():
  config = common.get_config().dataset
  config.update(source="tfds", name="smallnorb", label="label_azimuth")
  with tfds.testing.mock_data(num_examples=6):
    source = data_sources.load(config, "train")
    examples = list(source.dataset.map(source.decode).as_numpy_iterator())
  assert source.num_classes == 18 and len(examples) == 6
  assert all(0 <= x["label"] < 18 and x["label"].shape == () for x in examples)


def test_multi_label_sets_become_multi_hot_and_empty_sets_zeros():
  assert preprocess.encode_label(tf.constant(2, tf.int64), 4).numpy().tolist() == [0, 0, 1, 0]
  assert preprocess.encode_label(tf.constant([1, 3, 3], tf.int64), 4).numpy().tolist() == [0, 1, 0, 1]
  assert preprocess.encode_label(tf.zeros([0], tf.int64), 4).numpy().tolist() == [0, 0, 0, 0]


def test_real_config_evaluates_on_the_real_label_sets():
  config = imagenet2012_real.get_config("ViT-B_16,224")
  assert (config.dataset.name, config.dataset.label) == ("imagenet2012", "label")
  eval_config = input_pipeline.eval_data_config(config.dataset)
  assert (eval_config.name, eval_config.label) == ("imagenet2012_real", "real_label")
  eval_config.image_size = 32
  mesh = sharding.create_mesh(config.mesh)
  with tfds.testing.mock_data(num_examples=8):
    batches = list(input_pipeline.eval_passes(eval_config, global_batch_size=8,
                                              sharding=sharding.batch_sharding(mesh))())
  labels_seen = np.concatenate([np.asarray(b["label"]) for b in batches])
  assert labels_seen.shape == (8, 1000) and set(np.unique(labels_seen)) <= {0., 1.}


def test_dsprites_pixels_reach_the_model_as_0_and_255():
  config = vtab.get_config("dsprites_location").dataset
  with tfds.testing.mock_data(num_examples=4, max_value=2):  # dSprites' own 0/1 pixels
    source = data_sources.load(config, "train")
    images = np.stack([x["image"] for x in source.dataset.map(source.decode).as_numpy_iterator()])
  assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
  assert set(np.unique(images)) == {0, 255}


@pytest.mark.parametrize("task", ["kitti_distance", "clevr_count", "dsprites_orientation"])
def test_vtab_frames_are_squashed_whole_for_training_and_evaluation(task):
  # A wide frame (KITTI's is 3.3:1) with a black left and a white right band: VTAB squashes the
  # whole frame, so both bands are in the view; a central crop would keep only the middle.
  data = vtab.get_config(task).dataset
  frame = np.full((12, 40, 3), 128, np.uint8)
  frame[:, :8], frame[:, -8:] = 0, 255
  example = {"image": tf.constant(frame), "label": tf.constant(0, tf.int64)}
  size, classes = 10, data.num_classes
  views = [preprocess.eval_transform(size, classes, data.eval_preprocess)(example)["image"],
           preprocess.train_transform(data.train_augment, size, classes, data.random_flip)(
               example, tf.constant([0, 1], tf.int64))["image"]]
  for view in views:
    column = np.asarray(view).mean(axis=(0, 2))
    assert column[0] == -1.0 and column[-1] == 1.0  # the edges of the frame, unmirrored
