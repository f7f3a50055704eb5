"""The training system: sharded steps equal one device, accumulation, resume, preemption, NaN guard."""

import atexit
import os
import re
import shutil
import signal
import tempfile

import chex
import jax
import numpy as np
import pytest

from configs import common
from vit_jax import input_pipeline
from vit_jax import sharding
from vit_jax import train
from vit_jax import workdir as workdir_lib

# One compilation cache for the tiny runs of this process (the default, one per workdir, puts the
# workdir's path into XLA's options): a run of a config that ran before loads its steps from disk.
COMPILATION_CACHE = tempfile.mkdtemp(prefix="vit_jax_tests_compilation_cache_")
atexit.register(shutil.rmtree, COMPILATION_CACHE, ignore_errors=True)


def tiny_config(**overrides):
  """A 2-block ViT on the real digits, 8x8 with 4x4 patches: each step takes milliseconds."""
  config = common.get_config()
  config.model.patches.size = (4, 4)
  config.model.hidden_size = 64
  config.model.transformer.update(mlp_dim=128, num_heads=2, num_layers=2, dropout_rate=0.0)
  config.dataset.update(source="digits", num_classes=10, image_size=8, shuffle_buffer=2_000,
                        random_flip=False)
  config.update(batch_size=16, eval_batch_size=64, total_steps=6, log_every=2, eval_every=3,
                checkpoint_every=3)
  config.optimizer.update(warmup_steps=2, learning_rate=1e-3)
  config.compilation_cache = COMPILATION_CACHE
  config.update(overrides)
  return config


def random_batches(config, num, seed=0):
  rng = np.random.default_rng(seed)
  size, classes = config.dataset.image_size, config.dataset.num_classes
  return [{"image": rng.uniform(-1, 1, (config.batch_size, size, size, 3)).astype(np.float32),
           "label": np.eye(classes, dtype=np.float32)[rng.integers(0, classes, config.batch_size)]}
          for _ in range(num)]


def run_steps(config, mesh, batches):
  """Losses and final params of `len(batches)` steps on `mesh`."""
  model = train.create_model(config)
  tx = train.create_optimizer(config, model)
  state, state_sharding = train.create_train_state(config, model, tx, mesh)
  step = jax.jit(train.make_train_step(model, tx, config),
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)))
  losses = []
  for batch in batches:
    state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
  return np.array(losses), jax.device_get(state.params), state


@pytest.mark.parametrize("strategy", ["data", "fsdp"])
def test_eight_devices_train_like_one(strategy):
  config = tiny_config(sharding=strategy)
  batches = random_batches(config, 3)
  one = sharding.create_mesh(config.mesh, devices=jax.devices()[:1])
  eight = sharding.create_mesh(config.mesh)
  assert eight.devices.size == 8
  losses_1, params_1, _ = run_steps(config, one, batches)
  losses_8, params_8, state_8 = run_steps(config, eight, batches)
  np.testing.assert_allclose(losses_8, losses_1, atol=1e-5, rtol=0)
  chex.assert_trees_all_close(params_8, params_1, atol=1e-5, rtol=0)
  kernel = state_8.params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]
  expected = (jax.sharding.PartitionSpec() if strategy == "data"
              else jax.sharding.PartitionSpec(None, "data"))
  assert kernel.sharding.spec == expected
  if strategy == "fsdp":  # Adam moments are split like their params.
    assert len({shard.data.shape for shard in kernel.addressable_shards}) == 1
    assert kernel.addressable_shards[0].data.shape == (64, 16)


def test_gradient_accumulation_matches_the_full_batch():
  batches = random_batches(tiny_config(), 2)
  mesh = sharding.create_mesh(tiny_config().mesh)
  losses_full, params_full, _ = run_steps(tiny_config(), mesh, batches)
  config = tiny_config()
  config.optimizer.accum_steps = 2
  losses_accum, params_accum, _ = run_steps(config, mesh, batches)
  np.testing.assert_allclose(losses_accum, losses_full, atol=1e-6, rtol=0)
  chex.assert_trees_all_close(params_accum, params_full, atol=1e-6, rtol=0)


def test_batch_that_does_not_split_over_devices_fails_at_start(tmp_path):
  with pytest.raises(ValueError, match="batch_size 12 .* use a multiple of 8"):
    train.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))


def test_run_writes_config_checkpoints_and_results(tmp_path):
  state, results = train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert int(state.step) == 6
  written = workdir_lib.read_results(tmp_path)
  for key in ("accuracy", "top5", "loss", "steps", "train_seconds", "images_per_second", "config"):
    assert key in written
  assert written["steps"] == 6 and 0. <= written["accuracy"] <= written["top5"] <= 1.
  assert written["accuracy"] == results["accuracy"]
  assert written["config"]["dataset"]["source"] == "digits"
  assert workdir_lib.read_config(tmp_path).dataset.source == "digits"
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [3, 6]
  _, params = workdir_lib.load_params(tmp_path)
  chex.assert_trees_all_equal(params, jax.device_get(state.params))
  again, again_results = train.train_and_evaluate(tiny_config(), str(tmp_path))  # already done
  assert int(again.step) == 6 and again_results == written
  assert workdir_lib.read_results(tmp_path) == written
  # Scoring the saved run again (as the ImageNet-ReaL row does) gives the run's own evaluation.
  rescored = train.evaluate_checkpoint(tiny_config(), str(tmp_path))
  for key in ("accuracy", "top5", "loss"):
    assert rescored[key] == pytest.approx(written[key], rel=1e-6), key


def test_eval_step_scores_multi_hot_labels_as_real_accuracy():
  """ReaL: a hit is a prediction in the example's label set; examples without labels are left out."""
  config = tiny_config()
  model = train.create_model(config)
  params = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32), train=False)["params"]
  images = np.random.default_rng(0).uniform(-1, 1, (6, 8, 8, 3)).astype(np.float32)
  logits = np.asarray(model.apply({"params": params}, images, train=False))
  ranked = np.argsort(-logits, axis=-1)
  labels = np.zeros((6, 10), np.float32)
  labels[0, [ranked[0, 0], ranked[0, 7]]] = 1  # top-1 among two labels: hit
  labels[1, ranked[1, 1]] = 1                  # second choice: top-5 hit only
  labels[2, ranked[2, 9]] = 1                  # last choice: miss
  labels[3, [ranked[3, 3], ranked[3, 0]]] = 1  # hit
  # Example 4 has no label (left out); example 5 is padding (mask 0), although its label is hit.
  labels[5, ranked[5, 0]] = 1
  mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
  sums = jax.jit(train.make_eval_step(model))(params, {"image": images, "label": labels, "mask": mask})
  assert float(sums["count"]) == 4
  assert float(sums["correct"]) == 2 and float(sums["correct_top5"]) == 3
  targets = labels[:4] / labels[:4].sum(-1, keepdims=True)
  log_probs = logits[:4] - np.log(np.exp(logits[:4]).sum(-1, keepdims=True))
  np.testing.assert_allclose(float(sums["loss"]), -np.sum(targets * log_probs), rtol=1e-5)


def test_sigterm_saves_and_a_rerun_finishes_exactly_like_an_uninterrupted_run(tmp_path, monkeypatch):
  config = tiny_config(total_steps=8, checkpoint_every=100)
  uninterrupted, _ = train.train_and_evaluate(config, str(tmp_path / "uninterrupted"))

  real_train_batches = input_pipeline.train_batches

  def preempted_after_three(*args, **kwargs):
    for i, batch in enumerate(real_train_batches(*args, **kwargs)):
      if i == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", preempted_after_three)
  stopped, results = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert results["preempted"] and int(stopped.step) < 8
  assert workdir_lib.read_results(tmp_path / "resumed") is None
  monkeypatch.setattr(input_pipeline, "train_batches", real_train_batches)
  resumed, _ = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == 8
  chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(uninterrupted.params))


def test_a_non_finite_step_is_caught_by_the_next_check_and_nothing_is_saved(tmp_path):
  config = tiny_config(total_steps=40, checkpoint_every=9, log_every=9, eval_every=100)
  config.optimizer.update(learning_rate=1e12, warmup_steps=4, grad_clip_norm=0.)
  with pytest.raises(train.NonFiniteLossError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  first_bad = int(re.search(r"not finite from step (\d+)", message).group(1))
  assert 1 <= first_bad < 9  # found at the step-9 check, not at step 9
  assert message.startswith("Stopping at step 9:")
  assert f"No checkpoint was saved in {tmp_path}; a rerun starts from scratch." in message
  assert not list((tmp_path / "checkpoints").iterdir())


def test_a_non_finite_step_after_checkpoints_names_the_ones_on_disk(tmp_path):
  config = tiny_config(total_steps=40, checkpoint_every=1, log_every=100, eval_every=100)
  config.optimizer.update(learning_rate=1e12, warmup_steps=4, grad_clip_norm=0.)
  with pytest.raises(train.NonFiniteLossError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  assert saved, "the run diverged before its first checkpoint"
  assert f"Checkpoints on disk in {tmp_path / 'checkpoints'}: steps {saved}" in str(error.value)
  assert f"a rerun resumes from step {saved[-1]}" in str(error.value)
  _, params = workdir_lib.load_params(tmp_path)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_the_non_finite_tracker_keeps_the_first_bad_step():
  fold = jax.jit(train.first_nonfinite_step)
  first_bad = jax.numpy.zeros((), jax.numpy.int32)
  for step, (loss, grad_norm) in enumerate([(1., 1.), (1., np.inf), (np.nan, 1.), (1., 1.)], start=1):
    first_bad = fold(first_bad, {"loss": np.float32(loss), "grad_norm": np.float32(grad_norm)}, step)
  assert int(first_bad) == 2


def test_init_from_an_official_checkpoint_resizes_position_embeddings(tmp_path):
  fixture = os.path.join(os.path.dirname(__file__), "fixtures", "official_vit", "vit_token.npz")
  config = tiny_config(total_steps=3, init_checkpoint=fixture)
  config.model.hidden_size = 32
  config.model.transformer.update(mlp_dim=64, num_heads=2)
  config.dataset.image_size = 16  # the fixture's 8x8 grid becomes 4x4
  reference = np.load(fixture)
  model = train.create_model(config)
  tx = train.create_optimizer(config, model)
  state, _ = train.create_train_state(config, model, tx, sharding.create_mesh(config.mesh))
  params = train.load_init_params(config, jax.device_get(state.params))
  np.testing.assert_array_equal(params["embedding"]["kernel"], reference["embedding/kernel"])
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros_like(reference["head/kernel"]))
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 17, 32)
  trained, _ = train.train_and_evaluate(config, str(tmp_path))
  assert int(trained.step) == 3


def test_init_from_one_of_our_workdirs_takes_its_latest_params(tmp_path):
  config = tiny_config()
  mesh = sharding.create_mesh(config.mesh)
  _, params, state = run_steps(config, mesh, random_batches(config, 1))
  workdir_lib.write_config(tmp_path, config)
  manager = workdir_lib.checkpoint_manager(tmp_path, keep=1)
  workdir_lib.save_state(manager, 1, state)
  manager.wait_until_finished()
  loaded = train.load_init_params(tiny_config(init_checkpoint=str(tmp_path)),
                                  jax.eval_shape(lambda: state.params))
  chex.assert_trees_all_equal(loaded, dict(params, head=jax.tree.map(np.zeros_like, params["head"])))


def test_a_relative_workdir_works(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = tiny_config()
  manager = workdir_lib.checkpoint_manager("runs/relative", keep=1)
  _, _, state = run_steps(config, sharding.create_mesh(config.mesh), random_batches(config, 1))
  workdir_lib.save_state(manager, 1, state)
  manager.wait_until_finished()
  assert (tmp_path / "runs" / "relative" / "checkpoints" / "1").is_dir()
