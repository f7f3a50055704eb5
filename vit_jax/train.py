"""`train_and_evaluate(config, workdir)`: the one training entry, from scratch or from a checkpoint.

Reads top to bottom: mesh, model, optimizer, state (fresh, pretrained, or resumed), jitted steps, then
the loop that owns all I/O (batches, logs, evaluation, checkpoints, preemption). The steps are pure:
`train_step(state, batch) -> (state, metrics)`; every random number comes from the state's key folded
with the step, so a resumed run repeats exactly what the uninterrupted one would have done. The step
functions and the state live in `vit_jax.steps` (importable without TensorFlow); their names are
re-exported here.
"""

import time
from typing import Any, Callable, Iterator

from absl import logging
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_jax import checkpoint
from vit_jax import compilation_cache
from vit_jax import config_checks
from vit_jax import distillation
from vit_jax import flops
from vit_jax import input_pipeline
from vit_jax import metrics
from vit_jax import preemption
from vit_jax import pretrained
from vit_jax import profiling
from vit_jax import run_info
from vit_jax import sharding
from vit_jax import workdir as workdir_lib
from vit_jax.evaluators import fewshot
from vit_jax.steps import Batch, TrainState, create_model, create_optimizer, init_train_state
from vit_jax.steps import all_finite, first_nonfinite_step, make_eval_step, make_train_step


class NonFiniteLossError(RuntimeError):
  pass


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> tuple[TrainState, Any]:
  """A fresh state initialised directly in its layout on `mesh`; returns it and its shardings."""
  init = lambda rng: init_train_state(config, model, tx, rng)
  abstract = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = sharding.tree_shardings(abstract, mesh, config.sharding, config.sharding_rules)
  return jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed)), shardings


def load_init_params(config: ml_collections.ConfigDict, init_params: Any) -> Any:
  """Params of `config.init_checkpoint` (official .npz or one of our workdirs) adapted to this model.

  Transfer starts from a new head (`checkpoint.adapt`) unless `config.init_keep_head`.
  `init_params` gives only the target shapes (arrays or ShapeDtypeStructs); nothing is gathered.
  """
  path = epath.Path(config.init_checkpoint)
  keep_head = config.init_keep_head
  if (path / workdir_lib.CONFIG_FILE).exists():
    _, restored = workdir_lib.load_params(path, use_ema=config.init_use_ema)
    return checkpoint.adapt(restored, init_params, config.model, keep_head=keep_head)
  return checkpoint.load_pretrained(pretrained.resolve(config.init_checkpoint), init_params, config.model,
                                    transfer=True, keep_head=keep_head)


def evaluate(eval_step: Callable, params: Any, batches: Iterator[Batch]) -> dict[str, float]:
  totals = None
  for batch in batches:
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.)
  return {"accuracy": float(totals["correct"]) / count, "top5": float(totals["correct_top5"]) / count,
          "loss": float(totals["loss"]) / count}


def make_evaluator(config: ml_collections.ConfigDict, model: nn.Module, mesh: jax.sharding.Mesh,
                   params_sharding: Any) -> Callable[[Any], dict[str, float]]:
  """f(params) -> metrics on `config`'s eval split, plus its few-shot probes if it has any."""
  batch_sharding = sharding.batch_sharding(mesh)
  eval_step = jax.jit(make_eval_step(model), in_shardings=(params_sharding, batch_sharding),
                      out_shardings=sharding.replicated(mesh))
  fewshot_eval = fewshot.from_config(config, mesh)  # {} unless the config has a `fewshot` section
  eval_passes = input_pipeline.eval_passes(
      config.dataset, global_batch_size=config.eval_batch_size, sharding=batch_sharding)

  def evaluator(params: Any) -> dict[str, float]:
    return {**evaluate(eval_step, params, eval_passes()), **fewshot_eval(params)}

  return evaluator


def evaluate_checkpoint(config: ml_collections.ConfigDict, run_workdir: str) -> dict[str, float]:
  """Scores the latest params of the run in `run_workdir` on `config`'s eval split (and its few-shot
  probes, if it has any): how ImageNet-ReaL scores the ImageNet fine-tuning run."""
  mesh = sharding.create_mesh(config.mesh)
  _, params = workdir_lib.load_params(run_workdir)
  params_sharding = sharding.tree_shardings(params, mesh, config.sharding)
  evaluator = make_evaluator(config, create_model(config), mesh, params_sharding)
  return evaluator(jax.device_put(params, params_sharding))


def _check_batch_size(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  accum = config.optimizer.accum_steps
  if config.batch_size % (accum * mesh.shape["data"]):
    raise ValueError(
        f"batch_size {config.batch_size} must divide into optimizer.accum_steps={accum} micro-batches "
        f"split over the {mesh.shape['data']} devices of the mesh's data axis; use a multiple of "
        f"{accum * mesh.shape['data']}.")


def _check_finite(first_bad: jax.Array, step: int, manager: Any, workdir: str, params: Any = None) -> None:
  """Raises `NonFiniteLossError` if a step up to `step` had a non-finite loss or gradient (or, when
  given, `params` are not finite), saying which checkpoints are actually on disk."""
  bad = int(jax.device_get(first_bad))
  if not bad and (params is None or bool(jax.jit(all_finite)(params))):
    return
  workdir_lib.wait_for_saves(manager, step)
  manager.reload()
  saved = manager.all_steps()
  what = (f"the loss or gradient is not finite from step {bad}" if bad
          else f"the parameters are not finite at step {step}")
  if saved:
    on_disk = (f"Checkpoints on disk in {manager.directory}: steps {list(saved)}, all from before; a rerun "
               f"resumes from step {max(saved)}, which may already be diverging (if it fails again, "
               f"start a new run in a new --workdir).")
  else:
    on_disk = f"No checkpoint was saved in {workdir}; a rerun starts from scratch."
  raise NonFiniteLossError(
      f"Stopping at step {step}: {what}; nothing non-finite was saved. {on_disk} Lower "
      f"optimizer.learning_rate, raise optimizer.warmup_steps or set optimizer.grad_clip_norm.")


def _has_checkpoint(workdir: str) -> bool:
  directory = epath.Path(workdir) / "checkpoints"
  return directory.exists() and any(p.name.isdigit() for p in directory.iterdir())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> tuple[TrainState, dict[str, Any]]:
  """Trains `config` in `workdir`, resuming from its newest checkpoint that restores.

  Returns the final state (on the mesh) and the results, which also go to `workdir/results.json`
  when the run reaches `total_steps` (not when SIGTERM stopped it early). A run that finished without
  writing them (killed just before) is evaluated from its last checkpoint. Checks first, writing
  nothing when they fail: the config (`config_checks`), that no other run holds the workdir
  (`workdir.lock`), and that a relaunch changes only keys its checkpoints allow.
  """
  config_checks.validate(config)
  with workdir_lib.lock(workdir):
    return _train_in_workdir(config, workdir)


def _train_in_workdir(config: ml_collections.ConfigDict, workdir: str) -> tuple[TrainState, dict[str, Any]]:
  mesh = sharding.create_mesh(config.mesh)
  _check_batch_size(config, mesh)
  changes = workdir_lib.check_resume_config(workdir, config, _has_checkpoint(workdir))
  workdir_lib.write_config(workdir, config)
  compilation_cache.enable(config.compilation_cache, workdir)
  info = input_pipeline.get_info(config.dataset)
  model = create_model(config)
  tx = create_optimizer(config, model)

  # State: laid out on the mesh from the start, then replaced by a checkpoint if there is one.
  state, state_sharding = create_train_state(config, model, tx, mesh)
  manager = workdir_lib.checkpoint_manager(workdir, config.keep_checkpoints, config.keep_checkpoint_every)
  if manager.latest_step() is not None:
    state = workdir_lib.restore_latest_good(manager, state)
    logging.info("Resuming from step %d in %s", int(state.step), workdir)
    if jax.process_index() == 0:
      workdir_lib.record_config_changes(workdir, int(state.step), changes)
  elif config.init_checkpoint:
    params = jax.device_put(load_init_params(config, jax.eval_shape(lambda: state.params)),
                            state_sharding.params)
    ema_params = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
    state = state.replace(params=params, ema_params=ema_params)
  first_step = int(state.step)
  if first_step >= config.total_steps:
    manager.close()
    results = workdir_lib.read_results(workdir)
    if results is not None:
      logging.info("%s already finished (step %d); nothing to train.", workdir, first_step)
      return state, results
    logging.warning("%s finished (step %d) but has no %s (stopped before writing it): evaluating "
                    "its last checkpoint.", workdir, first_step, workdir_lib.RESULTS_FILE)
    eval_metrics = make_evaluator(config, model, mesh, state_sharding.params)(state.params)
    results = dict(eval_metrics, steps=first_step, train_seconds=None, preempted=False,
                   images_per_second=None, evaluated_on_rerun=True, config=config.to_dict())
    if jax.process_index() == 0:
      workdir_lib.write_results(workdir, results)
    return state, results

  batch_sharding = sharding.batch_sharding(mesh)
  teacher, teacher_args, teacher_shardings = None, (), ()
  if distillation.enabled(config):  # DeiT: the frozen teacher runs inside the step, on the same mesh
    teacher, teacher_params = distillation.load_teacher(config)
    teacher_shardings = (sharding.tree_shardings(teacher_params, mesh, config.sharding),)
    teacher_args = (jax.device_put(teacher_params, teacher_shardings[0]),)
  train_step = jax.jit(make_train_step(model, tx, config, teacher),
                       in_shardings=(state_sharding, batch_sharding, *teacher_shardings),
                       out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))
  batches = input_pipeline.train_batches(config.dataset, global_batch_size=config.batch_size,
                                         seed=config.seed, start_step=first_step, sharding=batch_sharding)
  evaluator = make_evaluator(config, model, mesh, state_sharding.params)

  writer = metrics.create_writer(workdir)
  run_info.record(config, writer)
  batch = next(batches)
  lowered = train_step.lower(state, batch, *teacher_args)
  compiled = lowered.compile()
  step_flops = flops.train_step_flops(config, lowered=None if teacher else lowered)
  progress = metrics.Progress(
      first_step=first_step, total_steps=config.total_steps, global_batch_size=config.batch_size,
      step_flops=step_flops,
      peak_flops_per_device=config.peak_flops_per_device or metrics.device_peak_flops())

  preemption_watch = preemption.PreemptionWatch()
  tracer = profiling.StepTracer(workdir, config.profile_steps)
  train_start, eval_metrics, step = time.perf_counter(), {}, first_step
  logging.info("Training %s on %s: steps %d..%d, %d train / %d eval examples, %d devices",
               config.model.model_name, config.dataset.source, first_step, config.total_steps,
               info.num_train_examples, info.num_eval_examples, jax.device_count())
  # First step whose loss or gradient was not finite (0: none), kept on the devices: checked at every
  # step without a host sync, read where the loop syncs anyway (logging) and before every save.
  first_bad = jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(mesh))
  track_finite = jax.jit(first_nonfinite_step)
  try:
    in_flight = None
    while step < config.total_steps:
      tracer.before_step(step + 1)
      state, step_metrics = compiled(state, batch, *teacher_args)
      first_bad = track_finite(first_bad, step_metrics, step + 1)
      # At most two steps in flight: XLA's CPU backend deadlocks collectives when the host queues
      # more than 32 computations per device, and nothing is gained by running further ahead.
      jax.block_until_ready(in_flight)
      in_flight = step_metrics["loss"]
      step += 1
      tracer.after_step(step, step_metrics)
      is_last = step == config.total_steps
      save_now = step % config.checkpoint_every == 0 or is_last
      if step % config.log_every == 0 or save_now or is_last:
        _check_finite(first_bad, step, manager, workdir)
        step_metrics = jax.device_get(step_metrics)
        step_metrics.update(progress.report(step))
        writer.write_scalars(step, step_metrics)
        metrics.log_line(step, config.total_steps, step_metrics)
      if step % config.eval_every == 0 or is_last:
        eval_metrics = evaluator(state.params)
        if state.ema_params is not None:
          eval_metrics.update({f"ema_{k}": v for k, v in evaluator(state.ema_params).items()})
        writer.write_scalars(step, {f"eval_{k}": v for k, v in eval_metrics.items()})
        logging.info("step %d eval: %s", step, eval_metrics)
      preempted = preemption_watch.reached(step)
      if save_now or preempted:
        _check_finite(first_bad, step, manager, workdir, state.params)
        workdir_lib.save_state(manager, step, state)
      if preempted:
        logging.warning("SIGTERM: saved step %d and stopping; run again to resume.", step)
        break
      if not is_last:
        wait_start = time.perf_counter()
        batch = next(batches)
        progress.waited_for_input(time.perf_counter() - wait_start)
  finally:
    batches.close()  # stops tf.data's background threads before anything they feed goes away
    workdir_lib.wait_for_saves(manager, step)
    manager.close()
    writer.flush()
    preemption_watch.close()
    tracer.stop()

  train_seconds = time.perf_counter() - train_start
  results = dict(eval_metrics, steps=step, train_seconds=train_seconds, preempted=preemption_watch.preempted,
                 images_per_second=(step - first_step) * config.batch_size / train_seconds,
                 flops_per_step=step_flops, mfu=progress.mfu(step - first_step, train_seconds),
                 config=config.to_dict())
  if step == config.total_steps and jax.process_index() == 0:
    workdir_lib.write_results(workdir, results)
  return state, results
