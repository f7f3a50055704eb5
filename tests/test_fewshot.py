"""Few-shot linear evaluation: the closed form equals a direct least-squares solve; real data beats chance.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from vit_jax import models
from vit_jax import sharding
from vit_jax.evaluators import fewshot

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "official_vit", "vit_token.npz")


def lstsq_probe(x, labels, num_classes, l2_reg):
  """Ridge regression written out as one least-squares problem: [X 1; sqrt(l2) I 0] [W; b] = [Y; 0]."""
  n, d = x.shape
  y = 2. * np.eye(num_classes)[labels] - 1.
  a = np.block([[x, np.ones((n, 1))], [np.sqrt(l2_reg) * np.eye(d), np.zeros((d, 1))]])
  solution = np.linalg.lstsq(a, np.concatenate([y, np.zeros((d, num_classes))]), rcond=None)[0]
  return solution[:d], solution[d]


@pytest.mark.parametrize("num_examples,dim", [(60, 8), (10, 50)])  # primal and dual forms
def test_probe_equals_direct_least_squares(num_examples, dim):
  rng = np.random.default_rng(0)
  x, labels = rng.normal(size=(num_examples, dim)), rng.integers(0, 5, num_examples)
  x_test, labels_test = rng.normal(size=(40, dim)), rng.integers(0, 5, 40)
  weights, bias = fewshot.fit_linear_probe(x, labels, 5, l2_reg=0.5)
  expected_weights, expected_bias = lstsq_probe(x, labels, 5, 0.5)
  np.testing.assert_allclose(weights, expected_weights, atol=1e-8)
  np.testing.assert_allclose(bias, expected_bias, atol=1e-8)
  expected = np.mean(np.argmax(x_test @ expected_weights + expected_bias, 1) == labels_test)
  accuracy = fewshot.linear_probe_accuracy(jnp.asarray(x, jnp.float32), labels, x_test, labels_test,
                                           5, l2_reg=0.5, protocol="plain")
  assert accuracy == pytest.approx(expected, abs=1e-9)


def test_probe_needs_regularisation_and_valid_labels():
  x = np.zeros((4, 3))
  with pytest.raises(ValueError, match="l2_reg must be > 0"):
    fewshot.fit_linear_probe(x, np.arange(4), 4, l2_reg=0.)
  with pytest.raises(ValueError, match=r"Labels must lie in \[0, 3\)"):
    fewshot.fit_linear_probe(x, np.arange(4), 3, l2_reg=1.)


def test_shots_are_k_per_class_and_seeded():
  labels = np.repeat(np.arange(4), 30)
  chosen = fewshot.sample_shots(labels, 5, seed=1)
  assert np.bincount(labels[chosen]).tolist() == [5, 5, 5, 5]
  np.testing.assert_array_equal(chosen, fewshot.sample_shots(labels, 5, seed=1))
  assert not np.array_equal(chosen, fewshot.sample_shots(labels, 5, seed=2))


def test_real_digit_pixels_beat_chance_and_more_shots_help():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  x, y = digits.data, digits.target
  accuracies = fewshot.fewshot_accuracies(x[:1400], y[:1400], x[1400:], y[1400:], 10, shots=(1, 10),
                                          seeds=3, l2_reg=1000.)
  assert accuracies[1] > 0.5 and accuracies[10] > 0.75 and accuracies[10] > accuracies[1]  # chance: 0.1


def tiny_config(**fewshot_settings):
  config = common.get_config()
  config.model.patches.size = (4, 4)
  config.model.hidden_size = 32
  config.model.transformer.update(mlp_dim=64, num_heads=2, num_layers=2)
  config.dataset.update(source="digits", num_classes=10, image_size=16, random_flip=False,
                        shuffle_buffer=2_000)
  config.fewshot = ml_collections.ConfigDict(dict(
      dataset=dict(train_split="train[:400]"), shots=(1, 5), seeds=2, l2_reg=1.0, batch_size=400))
  config.fewshot.update(fewshot_settings)
  return config


def test_features_extracted_over_eight_devices_equal_one_device_apply():
  config = tiny_config()
  mesh = sharding.create_mesh(config.mesh)
  assert mesh.devices.size == 8
  evaluator = fewshot.from_config(config, mesh)
  model = models.create(config.model, num_classes=0)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)["params"]
  features, labels = evaluator.features(params, "test[:20]")  # 20 rows padded to a batch of 400
  assert features.shape == (20, 32) and labels.shape == (20,)

  from vit_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  data = ml_collections.ConfigDict(config.dataset.to_dict())
  data.eval_split = "test[:24]"
  one_device = jax.sharding.NamedSharding(
      sharding.create_mesh(config.mesh, devices=jax.devices()[:1]), jax.sharding.PartitionSpec("data"))
  batch = next(input_pipeline.eval_passes(data, global_batch_size=24, sharding=one_device)())
  expected = model.apply({"params": params}, batch["image"], train=False)[:20]
  np.testing.assert_allclose(features, expected, atol=1e-5)
  np.testing.assert_array_equal(labels, np.argmax(batch["label"][:20], -1))


def test_evaluator_reads_its_splits_once_for_all_its_evaluations(monkeypatch):
  from vit_jax import data_sources  # pylint: disable=g-import-not-at-top
  loads = []
  load = data_sources.load
  monkeypatch.setattr(data_sources, "load", lambda *args: loads.append(args[1]) or load(*args))
  config = tiny_config()
  evaluator = fewshot.from_config(config, sharding.create_mesh(config.mesh))
  model = models.create(config.model, num_classes=0)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)["params"]
  first, second = evaluator(params), evaluator(params)
  assert sorted(loads) == ["test", "train[:400]"]
  assert set(first) == {"fewshot_1shot", "fewshot_5shot"} and second == first


def test_fewshot_section_is_checked():
  mesh = sharding.create_mesh(common.get_config().mesh)
  with pytest.raises(ValueError, match="Unknown keys \\['every'\\] in config.fewshot"):
    fewshot.from_config(tiny_config(every=3), mesh)
  config = tiny_config()
  config.fewshot.dataset.image_size = 32
  with pytest.raises(ValueError, match="cannot set \\['image_size'\\]"):
    fewshot.from_config(config, mesh)
  config.fewshot.shots = ()
  assert fewshot.from_config(config, mesh)(None) == {}


def test_official_npz_is_evaluated_at_a_new_resolution():
  model_config = tiny_config().model
  data = ml_collections.ConfigDict(tiny_config().dataset.to_dict())
  data.update(train_split="train[:200]", eval_split="test[:96]")  # 16px: the fixture's 8x8 grid -> 4x4
  results = fewshot.evaluate_checkpoint(FIXTURE, data, model_config=model_config, shots=(2,), seeds=1,
                                        l2_reg=1.0, batch_size=200)
  assert set(results) == {"fewshot_2shot"} and 0. <= results["fewshot_2shot"] <= 1.


def test_cli_sets_host_devices_for_its_batch_before_jax_starts(monkeypatch, capsys):
  asked, evaluated = [], []
  monkeypatch.setattr(fewshot.cpu_devices, "use_host_devices", asked.append)
  monkeypatch.setattr(fewshot, "evaluate_checkpoint",
                      lambda *args, **kwargs: evaluated.append(kwargs) or {"fewshot_5shot": 0.5})
  digits_config = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "digits.py")
  fewshot.main(["--checkpoint", FIXTURE, "--data_config", digits_config, "--batch_size", "64"])
  assert asked == [[64]] and evaluated[0]["batch_size"] == 64
  assert '"fewshot_5shot": 0.5' in capsys.readouterr().out


def big_vision_accuracy(x, y, x_test, y_test, num_classes, l2_reg):
  """big_vision's evaluators/fewshot_lsr.py written out in numpy: whiten, append the constant 100,
  eigendecompose x^T x (or x x^T with fewer points than dimensions), solve, score."""
  mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
  x = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=100.)
  targets = 2. * np.eye(num_classes)[y] - 1.
  if len(x) >= x.shape[1]:
    eigs, q = np.linalg.eigh(x.T @ x)
    rhs, lhs = q.T @ (x.T @ targets), q
  else:
    eigs, q = np.linalg.eigh(x @ x.T)
    rhs, lhs = q.T @ targets, x.T @ q
  w = (lhs / (eigs + l2_reg)[None]) @ rhs
  x_test = np.pad((x_test - mean) / std, ((0, 0), (0, 1)), constant_values=100.)
  return w, np.mean(np.argmax(x_test @ w, 1) == y_test)


@pytest.mark.parametrize("num_examples,dim", [(60, 8), (10, 50)])  # both of big_vision's branches
def test_big_vision_protocol_equals_its_closed_form(num_examples, dim):
  rng = np.random.default_rng(3)
  scale = rng.uniform(0.1, 10., dim)  # features on different scales: whitening matters
  x, labels = rng.normal(size=(num_examples, dim)) * scale + 2., rng.integers(0, 4, num_examples)
  x_test, labels_test = rng.normal(size=(200, dim)) * scale + 2., rng.integers(0, 4, 200)
  expected_weights, expected_accuracy = big_vision_accuracy(x, labels, x_test, labels_test, 4, 1024.)
  mean, std, weights = fewshot.fit_whitened_probe(x, labels, 4, l2_reg=1024.)
  np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
  np.testing.assert_allclose(std, x.std(0) + 1e-5, atol=1e-12)
  np.testing.assert_allclose(weights, expected_weights, atol=1e-8)
  accuracy = fewshot.linear_probe_accuracy(x, labels, x_test, labels_test, 4, 1024.)  # the default
  assert accuracy == pytest.approx(expected_accuracy, abs=1e-12)


def test_big_vision_protocol_is_the_default_with_its_l2_and_nested_shots():
  rng = np.random.default_rng(4)
  x, labels = rng.normal(size=(120, 6)), np.repeat(np.arange(4), 30)
  x_test, labels_test = rng.normal(size=(50, 6)), rng.integers(0, 4, 50)
  results = fewshot.fewshot_accuracies(x, labels, x_test, labels_test, 4, shots=(2, 5), seeds=2)
  for k in (2, 5):
    expected = []
    for seed in range(2):  # big_vision: one permutation per class and seed, its first k examples
      rng_seed = np.random.default_rng(seed)
      chosen = np.concatenate([rng_seed.permutation(np.flatnonzero(labels == c))[:k] for c in range(4)])
      expected.append(big_vision_accuracy(x[chosen], labels[chosen], x_test, labels_test, 4, 2. ** 10)[1])
    assert results[k] == pytest.approx(np.mean(expected), abs=1e-12)
  plain = fewshot.fewshot_accuracies(x, labels, x_test, labels_test, 4, shots=(2, 5), seeds=2,
                                     protocol="plain")
  assert plain == fewshot.fewshot_accuracies(x, labels, x_test, labels_test, 4, shots=(2, 5), seeds=2,
                                             protocol="plain", l2_reg=1.0)
  with pytest.raises(ValueError, match="config.fewshot.protocol='bv' is not one of"):
    fewshot.fewshot_accuracies(x, labels, x_test, labels_test, 4, protocol="bv")
  assert "big_vision's" in fewshot.describe() and "l2 1024" in fewshot.describe()
  assert "plain" in fewshot.describe("plain") and "l2 1" in fewshot.describe("plain")


def test_big_vision_protocol_probes_an_official_npz_on_its_pre_logits():
  import json  # pylint: disable=g-import-not-at-top

  path = os.path.join(os.path.dirname(FIXTURE), "vit_prelogits.npz")
  with np.load(path) as f:
    reference = json.loads(str(f["__config__"]))["model"]
    images, expected = f["__input__"], f["__prelogits__"]
  named = tiny_config().model  # a named model: no pre_logits layer
  named.update(classifier=reference["classifier"], hidden_size=reference["hidden_size"])
  assert fewshot.npz_features_config(path, named, "plain").representation_size is None
  config = fewshot.npz_features_config(path, named, "big_vision")
  assert config.representation_size == 16
  from vit_jax import checkpoint  # pylint: disable=g-import-not-at-top

  model = models.create(config, num_classes=0)
  init = model.init(jax.random.key(0), jnp.asarray(images), train=False)["params"]
  params = checkpoint.load_pretrained(path, init, config, transfer=True)  # features: no head
  features = model.apply({"params": params}, jnp.asarray(images), train=False)
  np.testing.assert_allclose(features, expected, atol=1e-5)  # the authors' pre_logits output
