"""Per-example losses from `config.loss`, checked against numpy references."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from vit_jax import losses

LOGITS = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], np.float32)
LABELS = np.array([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0]], np.float32)  # One-hot and mixup rows.


def _loss_config(**overrides) -> ml_collections.ConfigDict:
  config = common.get_config().loss
  config.lock()
  config.update(overrides)
  return config


def _numpy_softmax_xent(logits, labels):
  log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  return -np.sum(labels * log_probs, axis=-1)


def _numpy_sigmoid_xent(logits, labels):
  p = 1 / (1 + np.exp(-logits))
  return -np.sum(labels * np.log(p) + (1 - labels) * np.log(1 - p), axis=-1)


def test_softmax_xent_matches_numpy():
  loss = losses.softmax_cross_entropy(LOGITS, LABELS)
  assert loss.shape == (2,)
  np.testing.assert_allclose(loss, _numpy_softmax_xent(LOGITS, LABELS), rtol=1e-6)


def test_sigmoid_xent_sums_over_classes_and_matches_numpy():
  loss = losses.sigmoid_cross_entropy(LOGITS, LABELS)
  assert loss.shape == (2,)
  np.testing.assert_allclose(loss, _numpy_sigmoid_xent(LOGITS, LABELS), rtol=1e-6)


@pytest.mark.parametrize("fn,reference", [
    (losses.softmax_cross_entropy, _numpy_softmax_xent),
    (losses.sigmoid_cross_entropy, _numpy_sigmoid_xent),
])
def test_label_smoothing_mixes_labels_with_uniform(fn, reference):
  smoothed = LABELS * 0.9 + 0.1 / 3
  np.testing.assert_allclose(fn(LOGITS, LABELS, label_smoothing=0.1), reference(LOGITS, smoothed),
                             rtol=1e-6)


def test_softmax_xent_is_stable_for_large_logits():
  logits = np.array([[1000.0, 0.0]], np.float32)
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, np.array([[0.0, 1.0]])), [1000.0])


@pytest.mark.parametrize("fn", [losses.softmax_cross_entropy, losses.sigmoid_cross_entropy])
def test_bf16_logits_give_float32_loss(fn):
  loss = fn(jnp.asarray(LOGITS, jnp.bfloat16), LABELS)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, fn(LOGITS, LABELS), rtol=1e-2)


@pytest.mark.parametrize("name,fn", [("softmax_xent", losses.softmax_cross_entropy),
                                     ("sigmoid_xent", losses.sigmoid_cross_entropy)])
def test_loss_fn_selects_by_name_and_binds_smoothing(name, fn):
  loss = losses.loss_fn(_loss_config(name=name, label_smoothing=0.2))
  np.testing.assert_allclose(loss(LOGITS, LABELS), fn(LOGITS, LABELS, label_smoothing=0.2))


def test_unknown_loss_raises_with_valid_choices():
  with pytest.raises(ValueError, match=r"loss.name='l2'.*\['softmax_xent', 'sigmoid_xent'\]"):
    losses.loss_fn(_loss_config(name="l2"))


def test_label_smoothing_out_of_range_raises():
  with pytest.raises(ValueError, match="loss.label_smoothing=1.0"):
    losses.loss_fn(_loss_config(label_smoothing=1.0))


def test_mismatched_shapes_raise():
  with pytest.raises(ValueError, match=r"logits \(2, 3\) and labels \(2,\)"):
    losses.softmax_cross_entropy(LOGITS, np.array([0, 1]))
