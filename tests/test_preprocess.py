"""Transforms: model-ready shapes and ranges, stateless determinism, crops, mixup."""

import chex
import numpy as np
import pytest
import tensorflow as tf

from vit_jax import preprocess

SIZE, CLASSES = 12, 5


def _example(height: int = 20, width: int = 30, label: int = 3) -> dict[str, tf.Tensor]:
  image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
  return {"image": tf.constant(image), "label": tf.constant(label, tf.int64)}


def _seed(a: int, b: int) -> tf.Tensor:
  return tf.constant([a, b], tf.int64)


@pytest.mark.parametrize("augment", preprocess.TRAIN_AUGMENTS)
def test_train_transform_gives_model_inputs(augment):
  out = preprocess.train_transform(augment, SIZE, CLASSES)(_example(), _seed(0, 1))
  chex.assert_shape(out["image"], (SIZE, SIZE, 3))
  chex.assert_type([out["image"], out["label"]], np.float32)
  assert -1.0 <= out["image"].numpy().min() and out["image"].numpy().max() <= 1.0
  np.testing.assert_array_equal(out["label"], np.eye(CLASSES)[3])


@pytest.mark.parametrize("augment", ["inception_crop", "resmall_crop", "squash_crop"])
def test_train_transform_is_a_pure_function_of_the_seed(augment):
  transform = preprocess.train_transform(augment, SIZE, CLASSES)
  first, again = (transform(_example(), _seed(0, 7))["image"] for _ in range(2))
  np.testing.assert_array_equal(first, again)
  views = {transform(_example(), _seed(0, position))["image"].numpy().tobytes()
           for position in range(8)}
  assert len(views) >= 3  # other seeds, other crops and flips


def test_squash_crop_crops_from_the_resized_image():
  # A horizontal ramp keeps its order after resize and crop, and a flip reverses it.
  ramp = np.broadcast_to(np.arange(0, 240, 8, dtype=np.uint8)[None, :, None], (30, 30, 3))
  transform = preprocess.train_transform("squash_crop", SIZE, CLASSES)
  for position in range(6):
    row = transform({"image": tf.constant(ramp), "label": tf.constant(0, tf.int64)},
                    _seed(1, position))["image"].numpy()[0, :, 0]
    assert np.all(np.diff(row) > 0) or np.all(np.diff(row) < 0)


def test_inception_crop_stays_inside_the_image():
  example = {"image": tf.fill([40, 40, 3], tf.constant(255, tf.uint8)),
             "label": tf.constant(0, tf.int64)}
  out = preprocess.train_transform("inception_crop", SIZE, CLASSES)(example, _seed(2, 3))
  np.testing.assert_allclose(out["image"], 1.0)


def test_normalize_maps_0_and_255_to_minus_one_and_one():
  np.testing.assert_allclose(preprocess.normalize(tf.constant([0, 255], tf.uint8)), [-1.0, 1.0])


def test_eval_transform_crops_the_centre():
  # Left and right bands are black; the centre square (after resizing the short side) is white.
  image = np.zeros((10, 20, 3), np.uint8)
  image[:, 5:15] = 255
  out = preprocess.eval_transform(10, CLASSES)(
      {"image": tf.constant(image), "label": tf.constant(1, tf.int64)})
  chex.assert_shape(out["image"], (10, 10, 3))
  np.testing.assert_allclose(out["image"], 1.0)


def test_eval_transform_upscales_small_images():
  out = preprocess.eval_transform(SIZE, CLASSES)(_example(height=8, width=8))
  chex.assert_shape(out["image"], (SIZE, SIZE, 3))


def test_unknown_augment_names_the_config_key():
  with pytest.raises(ValueError, match="config.dataset.train_augment='autoaugment'"):
    preprocess.train_transform("autoaugment", SIZE, CLASSES)
  with pytest.raises(ValueError, match=r"train_augment='finetune' is not .* \(renamed 'squash_crop'\)"):
    preprocess.train_transform("finetune", SIZE, CLASSES)
  with pytest.raises(ValueError, match="config.dataset.eval_preprocess='crop'"):
    preprocess.eval_transform(SIZE, CLASSES, "crop")


def _view(transform, image: np.ndarray, *seed) -> np.ndarray:
  """The transform's output as pixels 0-255 again."""
  example = {"image": tf.constant(image), "label": tf.constant(0, tf.int64)}
  out = transform(example, _seed(*seed)) if seed else transform(example)
  return (out["image"].numpy() + 1.0) * 127.5


# Columns 0, 40, 80, 120 on a 2 x 4 image.
_COLUMNS = np.broadcast_to(np.array([0, 40, 80, 120], np.uint8)[None, :, None], (2, 4, 3))


def test_resize_squashes_the_whole_image():
  # vision_transformer / VTAB: 4 -> 2 columns, bilinear with half-pixel centres samples x = 0.5 and
  # 2.5, the means of columns (0, 1) and (2, 3): nothing is cut off.
  for view in (_view(preprocess.eval_transform(2, CLASSES, "resize"), _COLUMNS),
               _view(preprocess.train_transform("resize", 2, CLASSES), _COLUMNS, 0, 1)):
    np.testing.assert_allclose(view[..., 0], [[20, 100], [20, 100]], atol=1e-4)


def test_central_crop_keeps_the_central_square():
  # The shorter side is already 2: the central 2 x 2 square holds columns 1 and 2.
  view = _view(preprocess.eval_transform(2, CLASSES, "central_crop"), _COLUMNS)
  np.testing.assert_allclose(view[..., 0], [[40, 80], [40, 80]], atol=1e-4)


def _blocks(base: np.ndarray) -> np.ndarray:
  """Each pixel of `base` as a 2 x 2 block: 'area' resizing by 1/2 gives `base` back exactly."""
  return np.kron(base, np.ones((2, 2, 1), np.uint8))


def test_resmall_central_crop_is_big_visions_eval():
  # Size 6: the shorter side goes to round(6 * 448 / 384) = 7 (448 for 384), so a 14 x 18 image
  # becomes 7 x 9 (`base`); the 6 x 6 crop starts at ((7 - 6) // 2, (9 - 6) // 2) = (0, 1).
  assert round(384 * preprocess.RESMALL_RATIO) == 448
  base = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
  view = _view(preprocess.eval_transform(6, CLASSES, "resmall_central_crop"), _blocks(base))
  np.testing.assert_allclose(view, base[0:6, 1:7], atol=1e-4)


def test_resize_small_rounds_sides_and_keeps_the_aspect_ratio():
  image = tf.zeros([300, 500, 3], tf.uint8)
  resized = preprocess.resize_small(image, 448)
  assert resized.shape == (448, 747, 3) and resized.dtype == tf.uint8  # 500 * 448 / 300 = 746.7


def test_resmall_crop_is_a_random_window_of_the_resized_image():
  # big_vision's CIFAR transfer crop: `base` as above, then a random 6 x 6 window (no flip here).
  base = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
  windows = {base[i:i + 6, j:j + 6].tobytes(): (i, j) for i in range(2) for j in range(4)}
  transform = preprocess.train_transform("resmall_crop", 6, CLASSES, random_flip=False)
  seen = set()
  for position in range(12):
    view = np.round(_view(transform, _blocks(base), 0, position)).astype(np.uint8)
    assert view.tobytes() in windows
    seen.add(windows[view.tobytes()])
  assert len(seen) >= 3


def _batch() -> dict[str, tf.Tensor]:
  images = tf.constant(np.random.default_rng(1).uniform(-1, 1, (4, 3, 3, 3)), tf.float32)
  return {"image": images, "label": tf.one_hot([0, 1, 2, 3], CLASSES)}


def test_mixup_labels_sum_to_one_and_match_the_images():
  batch = _batch()
  mixed = preprocess.mixup(batch, 0.4, _seed(0, 5))
  np.testing.assert_allclose(tf.reduce_sum(mixed["label"], axis=-1), 1.0, rtol=1e-6)
  lam = mixed["label"].numpy()[1, 1]  # example 1 (class 1) mixed with example 0 (class 0)
  assert 0.0 <= lam <= 1.0
  np.testing.assert_allclose(mixed["label"].numpy()[1, 0], 1 - lam, rtol=1e-6)
  np.testing.assert_allclose(mixed["image"][1], lam * batch["image"][1]
                             + (1 - lam) * batch["image"][0], rtol=1e-5, atol=1e-6)


def test_mixup_is_a_pure_function_of_the_seed():
  lams = [preprocess.mixup(_batch(), 0.4, _seed(0, step))["label"].numpy()[1, 1]
          for step in (5, 5, 6)]
  assert lams[0] == lams[1] != lams[2]


def test_squash_crop_without_flip_never_mirrors():
  # An image whose left and right halves differ: a mirrored crop would swap them.
  image = tf.concat([tf.zeros([SIZE, SIZE // 2, 3], tf.uint8),
                     tf.fill([SIZE, SIZE - SIZE // 2, 3], tf.constant(255, tf.uint8))], axis=1)
  example = {"image": image, "label": tf.constant(1, tf.int64)}
  transform = preprocess.train_transform("squash_crop", SIZE, CLASSES, random_flip=False)
  for i in range(8):
    out = transform(example, _seed(i, 0))["image"].numpy()
    assert out[:, 0].mean() < out[:, -1].mean()


@pytest.mark.parametrize("module", ["cifar10", "cifar100", "imagenet2012", "imagenet2012_real",
                                    "oxford_flowers102", "oxford_iiit_pet"])
def test_transfer_configs_use_the_preprocessing_of_their_published_numbers(module):
  import importlib  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f"configs.transfer.{module}")
  data = config.get_config().dataset
  # vision_transformer's fine-tuning (the paper's Table 5): inception crop + flip; eval squashed.
  assert (data.train_augment, data.eval_preprocess, data.random_flip) == ("inception_crop", "resize", True)
  assert "vision_transformer's" in config.__doc__
