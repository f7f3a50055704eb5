"""RandAugment ops on tiny images against hand computations, determinism, and the pipeline's resume."""

import itertools

import chex
import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import common
from vit_jax import input_pipeline
from vit_jax import preprocess
from vit_jax import randaugment as ra


def image(values) -> tf.Tensor:
  return tf.constant(np.asarray(values, np.uint8))


GRADIENT = image(np.stack([np.arange(0, 160, 10).reshape(4, 4)] * 3, axis=-1))  # 0..150 per channel


def test_pixel_ops_match_hand_computations():
  x = GRADIENT.numpy().astype(int)
  np.testing.assert_array_equal(ra.invert(GRADIENT), 255 - x)
  np.testing.assert_array_equal(ra.posterize(GRADIENT, 2), x & 0b11000000)
  np.testing.assert_array_equal(ra.posterize(GRADIENT, 0), 0 * x)
  np.testing.assert_array_equal(ra.solarize(GRADIENT, 100), np.where(x < 100, x, 255 - x))
  np.testing.assert_array_equal(ra.solarize_add(GRADIENT, 110), np.where(x < 128, np.minimum(x + 110, 255), x))
  np.testing.assert_array_equal(ra.autocontrast(GRADIENT), (x * (255 / 150)).astype(np.uint8))
  np.testing.assert_array_equal(ra.brightness(GRADIENT, 1.5), np.clip(x * 1.5, 0, 255).astype(np.uint8))
  np.testing.assert_array_equal(ra.color(GRADIENT, 0.3), x)  # gray images have no colour to change
  # big_vision's Contrast blends towards sum(histogram) / 256 = 16 pixels / 256 -> gray 0.
  np.testing.assert_array_equal(ra.contrast(GRADIENT, 0.5), (x * 0.5).astype(np.uint8))


def test_equalize_spreads_a_two_valued_channel():
  x = image(np.stack([np.array([[10, 10], [20, 20]])] * 3, axis=-1))
  # histogram: 2 at 10, 2 at 20; step = (4 - 2) // 255 = 0 -> unchanged (PIL's rule).
  np.testing.assert_array_equal(ra.equalize(x), x)
  flat = np.repeat(np.arange(0, 256, 1), 2)[:512].reshape(16, 32)
  x = image(np.stack([flat] * 3, axis=-1))  # every value twice: equalisation is the identity
  np.testing.assert_array_equal(ra.equalize(x), x)


def test_geometric_ops_move_pixels_and_fill_gray():
  x = image(np.arange(48).reshape(4, 4, 3))
  moved = ra.translate_x(x, 1.).numpy()
  np.testing.assert_array_equal(moved[:, :3], x.numpy()[:, 1:])  # content moves one pixel left
  np.testing.assert_array_equal(moved[:, 3], np.full((4, 3), 128))
  np.testing.assert_array_equal(ra.translate_y(x, -1.).numpy()[1:], x.numpy()[:3])
  np.testing.assert_array_equal(ra.rotate(x, 0.), x)
  np.testing.assert_array_equal(ra.rotate(ra.rotate(x, 90.), -90.), x)
  np.testing.assert_array_equal(ra.rotate(x, 180.).numpy(), x.numpy()[::-1, ::-1])
  np.testing.assert_array_equal(ra.shear_x(x, 0.), x)


def test_cutout_grays_a_square_inside_the_image():
  x = image(np.zeros((10, 10, 3)))
  out = ra.cutout(x, 2, tf.constant([0, 1], tf.int64)).numpy()
  gray = np.argwhere(out[..., 0] == 128)
  assert 1 <= len(gray) <= 16 and np.all(out[out != 0] == 128)
  height, width = np.ptp(gray, axis=0) + 1
  assert height <= 4 and width <= 4


def test_randaugment_is_a_pure_function_of_the_seed():
  x = image(np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
  seeds = [tf.constant([0, s], tf.int64) for s in (1, 1, 2, 3, 4)]
  outs = [ra.randaugment(x, 2, 15., s).numpy() for s in seeds]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert any(not np.array_equal(outs[0], o) for o in outs[2:])


@pytest.mark.parametrize("pixel_scale, shift", [(1., 0), (32 / 224, 14)])
def test_pixel_scale_shrinks_translate_and_cutout_in_proportion(pixel_scale, shift):
  x = np.zeros((32, 32, 3))
  x[:, 20] = 255  # a vertical line at column 20
  ops = dict(zip(ra.OP_NAMES, ra._ops(10., tf.constant(1.), tf.constant([0, 1], tf.int64), pixel_scale)))
  moved = ops["TranslateX"](image(x)).numpy()[..., 0]
  line = np.flatnonzero((moved == 255).all(0))
  if shift:  # 100 px x 32/224 = 14.3 px to the left (nearest neighbour), gray where the frame emptied
    np.testing.assert_array_equal(line, [20 - shift])
    assert (moved[:, 32 - shift:] == 128).all()
  else:  # big_vision's 100 px move everything out of a 32-px image
    assert line.size == 0 and (moved == 128).all()
  gray = np.argwhere(ops["Cutout"](image(np.zeros((64, 64, 3)))).numpy()[..., 0] == 128)
  assert (np.ptp(gray, axis=0) + 1).max() <= 2 * int(40 * pixel_scale)


def test_randaugment_wants_uint8():
  with pytest.raises(ValueError, match="uint8"):
    ra.randaugment(tf.zeros((4, 4, 3)), 2, 10., tf.constant([0, 1], tf.int64))


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
  images = tf.stack([tf.zeros((8, 8, 3)), tf.ones((8, 8, 3))])
  batch = {"image": images, "label": tf.constant([[1., 0.], [0., 1.]])}
  mixed = preprocess.cutmix(batch, 1.0, tf.constant([0, 7], tf.int64))
  pasted = float(tf.reduce_mean(mixed["image"][0]))  # the fraction of example 0 taken from example 1
  np.testing.assert_allclose(mixed["label"][0], [1 - pasted, pasted], rtol=1e-6)
  np.testing.assert_allclose(float(tf.reduce_mean(mixed["image"][1])), 1 - pasted)  # 1 gets 0's box
  np.testing.assert_allclose(mixed["label"][1], [pasted, 1 - pasted], rtol=1e-6)
  assert 0 < pasted < 1
  np.testing.assert_allclose(tf.reduce_sum(mixed["label"], -1), 1., rtol=1e-6)
  again = preprocess.cutmix(batch, 1.0, tf.constant([0, 7], tf.int64))
  chex.assert_trees_all_equal(again, mixed)


@pytest.mark.parametrize("start_step", [1, 3])
def test_augmented_runs_resume_exactly(start_step, sharding):
  config = common.get_config().dataset
  config.update(dict(source="digits", image_size=8, train_augment="inception_crop", train_split="train[:40]",
                     randaugment_layers=2, randaugment_magnitude=15., mixup_alpha=0.2, cutmix_alpha=1.0))
  run = lambda steps, start: [jax.tree.map(np.asarray, b) for b in itertools.islice(
      input_pipeline.train_batches(config, global_batch_size=16, seed=0, start_step=start,
                                   sharding=sharding), steps)]
  unbroken = run(4, 0)
  chex.assert_trees_all_equal(run(4 - start_step, start_step), unbroken[start_step:])
  np.testing.assert_allclose(unbroken[0]["label"].sum(-1), 1., rtol=1e-6)


@pytest.mark.parametrize("arg, layers, magnitude, mixup, dropout", [
    ("ViT-Ti_16,light1", 2, 0., 0., 0.), ("ViT-S_16,medium1", 2, 15., 0.2, 0.),
    ("ViT-B_16,medium2,reg", 2, 15., 0.5, 0.1), ("ViT-B_16,strong1,30", 2, 20., 0.5, 0.),
    ("ViT-B_16,none", 0, 0., 0., 0.)])
def test_augreg_configs_set_big_vision_levels(arg, layers, magnitude, mixup, dropout):
  from configs.augreg import i21k  # pylint: disable=g-import-not-at-top
  config = i21k.get_config(arg)
  assert (config.dataset.randaugment_layers, config.dataset.randaugment_magnitude) == (layers, magnitude)
  assert config.dataset.mixup_alpha == mixup
  assert config.model.transformer.dropout_rate == config.model.stochastic_depth == dropout
  assert config.total_steps == (30 if arg.endswith(",30") else 300) * 14_000_000 // 4096


def test_augreg_config_rejects_unknown_levels():
  from configs.augreg import i21k  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="LEVEL in"):
    i21k.get_config("ViT-B_16,heavy")
