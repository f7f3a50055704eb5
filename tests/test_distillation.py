"""DeiT: the distillation loss by hand, the distillation token through timm and our npz, the teacher step."""

import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint
from vit_jax import convert
from vit_jax import distillation
from vit_jax import losses
from vit_jax import models
from vit_jax import train
from tests.test_train import random_batches, tiny_config

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "interop" / "timm_deit_distilled"
OFFICIAL = pathlib.Path(__file__).parent / "fixtures" / "official_vit" / "vit_token.npz"


@pytest.fixture(autouse=True)
def _full_precision():
  with jax.default_matmul_precision("highest"):
    yield


def log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.sum(np.exp(x)))


CLS, DIST, TEACHER = np.array([[1., 0., -1.]]), np.array([[0., 2., 0.]]), np.array([[0.5, 0., 3.]])
LABELS = np.array([[0., 1., 0.]])


def test_hard_distillation_is_half_label_half_teacher_argmax():
  loss = losses.distillation_loss(CLS, DIST, LABELS, TEACHER, "hard")
  expected = 0.5 * -log_softmax(CLS[0])[1] + 0.5 * -log_softmax(DIST[0])[2]  # teacher's argmax: class 2
  np.testing.assert_allclose(loss, [expected], rtol=1e-6)


def test_soft_distillation_is_the_papers_tempered_kl():
  tau, alpha = 2.0, 0.3
  loss = losses.distillation_loss(CLS, DIST, LABELS, TEACHER, "soft", alpha=alpha, tau=tau)
  p_t, log_t, log_s = np.exp(log_softmax(TEACHER[0] / tau)), log_softmax(TEACHER[0] / tau), log_softmax(DIST[0] / tau)
  expected = (1 - alpha) * -log_softmax(CLS[0])[1] + alpha * tau**2 * np.sum(p_t * (log_t - log_s))
  np.testing.assert_allclose(loss, [expected], rtol=1e-6)


def test_teacher_gets_no_gradient_and_unknown_type_is_reported():
  grad = jax.grad(lambda t: losses.distillation_loss(CLS, DIST, LABELS, t, "soft").sum())(TEACHER)
  np.testing.assert_array_equal(grad, 0.)
  with pytest.raises(ValueError, match="distillation.type='medium'"):
    losses.distillation_loss(CLS, DIST, LABELS, TEACHER, "medium")


def test_timm_deit_distilled_converts_with_timms_outputs():
  config, params = convert.load(FIXTURE, "timm")
  assert config.distilled and params["dist"].shape == (1, 1, 32) and "head_dist" in params
  reference = np.load(FIXTURE / "reference.npz")
  model = models.create(config)
  images = reference["input_nhwc"]
  np.testing.assert_allclose(model.apply({"params": params}, images), reference["logits"], atol=1e-5)
  cls_logits, dist_logits = model.apply({"params": params}, images, distillation_heads=True)
  np.testing.assert_allclose(cls_logits, reference["cls_logits"], atol=1e-5)
  np.testing.assert_allclose(dist_logits, reference["dist_logits"], atol=1e-5)
  assert np.abs(reference["cls_logits"] - reference["dist_logits"]).max() > 0.1  # a swap would show


def test_distilled_params_round_trip_through_timm_and_npz(tmp_path):
  config, params = convert.load(FIXTURE, "timm")
  written = convert.save(params, config, tmp_path / "timm", "timm")
  source, back = safetensors.numpy.load_file(FIXTURE / "model.safetensors"), safetensors.numpy.load_file(written)
  assert sorted(back) == sorted(source)
  for name in source:
    np.testing.assert_array_equal(back[name], source[name], err_msg=name)
  checkpoint.save_npz(tmp_path / "deit.npz", params)
  again = checkpoint.params_from_flat(checkpoint.load_npz(tmp_path / "deit.npz"))
  jax.tree.map(np.testing.assert_array_equal, again, params)
  assert set(flax.traverse_util.flatten_dict(again, sep="/")) >= {"dist", "head_dist/kernel"}


def distilled_config():
  config = tiny_config()
  config.model.distilled = True
  config.distillation.update(type="hard", teacher="unused: the test builds the teacher")
  return config


def test_train_step_learns_from_the_frozen_teacher():
  config = distilled_config()
  model = train.create_model(config)
  tx = train.create_optimizer(config, model)
  # Jitted set-up and reference: run eagerly, every op of the models would compile on its own.
  state = jax.jit(lambda key: train.init_train_state(config, model, tx, key))(jax.random.key(0))
  state = state.replace(params=jax.jit(lambda params: jax.tree.map(  # non-zero heads: the terms differ
      lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), params))(state.params))
  teacher = distillation.Teacher(models.create(config.model, num_classes=10, distilled=False), 16)
  teacher_params = jax.jit(teacher.model.init)(jax.random.key(2), jnp.zeros((1, 16, 16, 3)))["params"]
  batch = random_batches(config, 1)[0]
  new_state, metrics = jax.jit(train.make_train_step(model, tx, config, teacher))(state, batch, teacher_params)

  @jax.jit
  def reference_loss(params, teacher_params, batch):
    cls_logits, dist_logits = model.apply({"params": params}, batch["image"], distillation_heads=True)
    return losses.distillation_loss(cls_logits, dist_logits, batch["label"],
                                    teacher.logits(teacher_params, batch["image"]), "hard").mean()

  expected = reference_loss(state.params, teacher_params, batch)
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
  assert int(new_state.step) == 1


def test_distillation_config_errors_name_the_keys():
  config = distilled_config()
  assert distillation.enabled(config)
  config.model.distilled = False
  with pytest.raises(ValueError, match="model.distilled=True"):
    distillation.enabled(config)
  config = distilled_config()
  config.distillation.teacher = str(OFFICIAL)
  with pytest.raises(ValueError, match="distillation.teacher_model"):
    distillation.load_teacher(config)
  config.distillation.teacher_model = "ViT-Ti_16"
  config.dataset.num_classes = 7
  with pytest.raises(ValueError, match="must predict the student's 7 classes"):
    distillation.load_teacher(config)


@pytest.mark.parametrize("arg", ["ViT-Ti_16", "ViT-S_16,distilled", "ViT-B_16,distilled"])
def test_deit_configs_follow_the_papers_schedule(arg):
  from configs.deit import imagenet1k  # pylint: disable=g-import-not-at-top
  config = imagenet1k.get_config(arg)
  assert config.total_steps == 300 * 1251 and config.optimizer.warmup_steps == 5 * 1251
  assert config.optimizer.learning_rate == 1e-3 and config.model.stochastic_depth == 0.1
  assert config.model.distilled == arg.endswith("distilled")
  assert config.distillation.type == ("hard" if config.model.distilled else "")
  if config.model.distilled:  # the teacher is the user's to give
    with pytest.raises(ValueError, match="distillation.teacher is empty"):
      distillation.enabled(config)
  model = train.create_model(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))["params"]
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
  # timm 1.0.31's counts of deit_tiny_patch16_224, deit_small_distilled_patch16_224 and
  # deit_base_distilled_patch16_224 (timm.create_model(name), summed parameters).
  assert count == {"ViT-Ti_16": 5_717_416, "ViT-S_16,distilled": 22_436_432,
                   "ViT-B_16,distilled": 87_338_192}[arg]
