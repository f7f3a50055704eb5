"""`train_and_evaluate(config, workdir)`: the one training entry, from scratch or from a checkpoint.

Reads top to bottom: mesh, model, optimizer, state (fresh, pretrained, or resumed), jitted steps, then
the loop that owns all I/O (batches, logs, evaluation, checkpoints, preemption). The steps are pure:
`train_step(state, batch) -> (state, metrics)`; every random number comes from the state's key folded
with the step, so a resumed run repeats exactly what the uninterrupted one would have done. The step
functions and the state live in `vit_jax.steps` (importable without TensorFlow); their names are
re-exported here.
"""

import signal
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
from etils import epath
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_jax import checkpoint
from vit_jax import distillation
from vit_jax import input_pipeline
from vit_jax import metrics
from vit_jax import pretrained
from vit_jax import sharding
from vit_jax import workdir as workdir_lib
from vit_jax.evaluators import fewshot
from vit_jax.steps import Batch, TrainState, create_model, create_optimizer, init_train_state
from vit_jax.steps import make_eval_step, make_train_step


class NonFiniteLossError(RuntimeError):
  pass


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> tuple[TrainState, Any]:
  """A fresh state initialised directly in its layout on `mesh`; returns it and its shardings."""
  init = lambda rng: init_train_state(config, model, tx, rng)
  abstract = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = sharding.tree_shardings(abstract, mesh, config.sharding)
  return jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed)), shardings


def load_init_params(config: ml_collections.ConfigDict, init_params: Any) -> Any:
  """Params of `config.init_checkpoint` (official .npz or one of our workdirs) fitted to this model.

  `init_params` gives only the target shapes (arrays or ShapeDtypeStructs); nothing is gathered.
  """
  path = epath.Path(config.init_checkpoint)
  if (path / workdir_lib.CONFIG_FILE).exists():
    _, restored = workdir_lib.load_params(path, use_ema=config.init_use_ema)
    return checkpoint.adapt(restored, init_params, config.model)
  return checkpoint.load_pretrained(pretrained.resolve(config.init_checkpoint), init_params, config.model)


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

  def evaluator(params: Any) -> dict[str, float]:
    batches = input_pipeline.eval_batches(
        config.dataset, global_batch_size=config.eval_batch_size, sharding=batch_sharding)
    return {**evaluate(eval_step, params, batches), **fewshot_eval(params)}

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


def _stop_requested(event: threading.Event) -> bool:
  """True on every process once any process got SIGTERM (they must stop at the same step)."""
  if jax.process_count() == 1:
    return event.is_set()
  return bool(np.any(multihost_utils.process_allgather(np.array(event.is_set()))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> tuple[TrainState, dict[str, Any]]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Returns the final state (on the mesh) and the results, which also go to `workdir/results.json`
  when the run reaches `total_steps` (not when SIGTERM stopped it early).
  """
  mesh = sharding.create_mesh(config.mesh)
  _check_batch_size(config, mesh)
  workdir_lib.write_config(workdir, config)
  info = input_pipeline.get_info(config.dataset)
  model = create_model(config)
  tx = create_optimizer(config, model)

  # State: laid out on the mesh from the start, then replaced by a checkpoint if there is one.
  state, state_sharding = create_train_state(config, model, tx, mesh)
  manager = workdir_lib.checkpoint_manager(workdir, config.keep_checkpoints)
  if manager.latest_step() is not None:
    logging.info("Resuming from step %d in %s", manager.latest_step(), workdir)
    state = workdir_lib.restore_state(manager, state)
  elif config.init_checkpoint:
    params = jax.device_put(load_init_params(config, jax.eval_shape(lambda: state.params)),
                            state_sharding.params)
    ema_params = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
    state = state.replace(params=params, ema_params=ema_params)
  first_step = int(state.step)
  if first_step >= config.total_steps:
    logging.info("%s already finished (step %d); nothing to train.", workdir, first_step)
    manager.close()
    return state, workdir_lib.read_results(workdir) or {}

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
  batch = next(batches)
  compiled = train_step.lower(state, batch, *teacher_args).compile()
  progress = metrics.Progress(
      first_step=first_step, total_steps=config.total_steps, global_batch_size=config.batch_size,
      step_flops=metrics.compiled_flops(compiled),
      peak_flops_per_device=config.peak_flops_per_device or metrics.device_peak_flops())

  stop = threading.Event()
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.set())
  train_start, eval_metrics, step = time.perf_counter(), {}, first_step
  logging.info("Training %s on %s: steps %d..%d, %d train / %d eval examples, %d devices",
               config.model.model_name, config.dataset.source, first_step, config.total_steps,
               info.num_train_examples, info.num_eval_examples, jax.device_count())
  try:
    in_flight = None
    while step < config.total_steps:
      state, step_metrics = compiled(state, batch, *teacher_args)
      # At most two steps in flight: XLA's CPU backend deadlocks collectives when the host queues
      # more than 32 computations per device, and nothing is gained by running further ahead.
      jax.block_until_ready(in_flight)
      in_flight = step_metrics["loss"]
      step += 1
      is_last = step == config.total_steps
      save_now = step % config.checkpoint_every == 0 or is_last
      if step % config.log_every == 0 or save_now or is_last:
        step_metrics = jax.device_get(step_metrics)
        if not np.isfinite(step_metrics["loss"]):
          raise NonFiniteLossError(
              f"Loss is {step_metrics['loss']} at step {step}; stopping. The last good checkpoint is "
              f"kept in {workdir}/checkpoints. Lower optimizer.learning_rate or raise warmup_steps.")
        step_metrics.update(progress.report(step))
        writer.write_scalars(step, step_metrics)
        metrics.log_line(step, config.total_steps, step_metrics)
      if step % config.eval_every == 0 or is_last:
        eval_metrics = evaluator(state.params)
        if state.ema_params is not None:
          eval_metrics.update({f"ema_{k}": v for k, v in evaluator(state.ema_params).items()})
        writer.write_scalars(step, {f"eval_{k}": v for k, v in eval_metrics.items()})
        logging.info("step %d eval: %s", step, eval_metrics)
      # Across hosts the check is a collective, so it runs at log steps only.
      preempted = (jax.process_count() == 1 or step % config.log_every == 0) and _stop_requested(stop)
      if save_now or preempted:
        workdir_lib.save_state(manager, step, state)
      if preempted:
        logging.warning("SIGTERM: saved step %d and stopping; run again to resume.", step)
        break
      if not is_last:
        batch = next(batches)
  finally:
    batches.close()  # stops tf.data's background threads before anything they feed goes away
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    signal.signal(signal.SIGTERM, previous_handler)

  train_seconds = time.perf_counter() - train_start
  results = dict(eval_metrics, steps=step, train_seconds=train_seconds, preempted=stop.is_set(),
                 images_per_second=(step - first_step) * config.batch_size / train_seconds,
                 config=config.to_dict())
  if step == config.total_steps and jax.process_index() == 0:
    workdir_lib.write_results(workdir, results)
  return state, results
