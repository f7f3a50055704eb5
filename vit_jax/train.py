"""`train_and_evaluate(config, workdir)`: the one training entry, from scratch or from a checkpoint.

Reads top to bottom: mesh, model, optimizer, state (fresh, pretrained, or resumed), jitted steps, then
the loop that owns all I/O (batches, logs, evaluation, checkpoints, preemption). The steps are pure:
`train_step(state, batch) -> (state, metrics)`; every random number comes from the state's key folded
with the step, so a resumed run repeats exactly what the uninterrupted one would have done.
"""

import signal
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
from etils import epath
import flax
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_jax import checkpoint
from vit_jax import input_pipeline
from vit_jax import losses
from vit_jax import metrics
from vit_jax import models
from vit_jax import optim
from vit_jax import pretrained
from vit_jax import sharding
from vit_jax import workdir as workdir_lib

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key data: orbax saves it like any array


class NonFiniteLossError(RuntimeError):
  pass


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  return models.create(config.model, num_classes=config.dataset.num_classes)


def init_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                     tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  """A fresh state: model init, optimizer init, and the key that all later randomness derives from."""
  init_rng, state_rng = jax.random.split(rng)
  size = config.dataset.image_size
  params = model.init(init_rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(state_rng))


def create_optimizer(config: ml_collections.ConfigDict, model: nn.Module) -> optax.GradientTransformation:
  abstract = jax.eval_shape(lambda: init_train_state(config, model, optax.identity(), jax.random.key(0)))
  return optim.create_optimizer(config.optimizer, config.total_steps, abstract.params)


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> tuple[TrainState, Any]:
  """A fresh state initialised directly in its layout on `mesh`; returns it and its shardings."""
  init = lambda rng: init_train_state(config, model, tx, rng)
  abstract = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = sharding.tree_shardings(abstract, mesh, config.sharding)
  return jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed)), shardings


def load_init_params(config: ml_collections.ConfigDict, init_params: Any) -> Any:
  """Params of `config.init_checkpoint` (official .npz or one of our workdirs) fitted to this model."""
  path = epath.Path(config.init_checkpoint)
  if (path / workdir_lib.CONFIG_FILE).exists():
    _, restored = workdir_lib.load_params(path)
    return checkpoint.adapt(restored, init_params, config.model)
  return checkpoint.load_pretrained(pretrained.resolve(config.init_checkpoint), init_params, config.model)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """The pure step; with `optimizer.accum_steps > 1` the batch is split into micro-batches whose
  gradients are averaged in a `lax.scan`, so memory holds one micro-batch of activations."""
  loss_fn = losses.loss_fn(config.loss)
  accum_steps = config.optimizer.accum_steps
  schedule = optim.learning_rate_schedule(config.optimizer, config.total_steps)

  def micro_loss(params, images, labels, rng):
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return jnp.mean(loss_fn(logits, labels))

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grad_fn = jax.value_and_grad(micro_loss)
    if accum_steps == 1:
      loss, grads = grad_fn(state.params, batch["image"], batch["label"], rng)
    else:
      split = lambda x: x.reshape((accum_steps, -1) + x.shape[1:])
      micro = (split(batch["image"]), split(batch["label"]), jax.random.split(rng, accum_steps))

      def accumulate(carry, xs):
        loss, grads = grad_fn(state.params, *xs)
        return jax.tree.map(jnp.add, carry, (loss, grads)), None

      zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
      loss, grads = jax.tree.map(lambda x: x / accum_steps, (loss, grads))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step_metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                    "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), step_metrics

  return train_step


def make_eval_step(model: nn.Module) -> Callable[[Any, Batch], dict]:
  """Sums over the real (mask 1) examples of a batch: top-1 and top-5 hits, loss, count."""

  def eval_step(params, batch: Batch) -> dict:
    logits = model.apply({"params": params}, batch["image"], train=False)
    mask, labels = batch["mask"], jnp.argmax(batch["label"], axis=-1)
    top5 = jnp.argsort(logits, axis=-1)[:, -5:]
    return {
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "loss": jnp.sum(optax.softmax_cross_entropy(logits, batch["label"]) * mask),
        "count": jnp.sum(mask),
    }

  return eval_step


def evaluate(eval_step: Callable, params: Any, batches: Iterator[Batch]) -> dict[str, float]:
  totals = None
  for batch in batches:
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.)
  return {"accuracy": float(totals["correct"]) / count, "top5": float(totals["correct_top5"]) / count,
          "loss": float(totals["loss"]) / count}


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
    params = load_init_params(config, jax.device_get(state.params))
    state = state.replace(params=jax.device_put(params, state_sharding.params))
  first_step = int(state.step)

  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(make_train_step(model, tx, config), in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(model), in_shardings=(state_sharding.params, batch_sharding),
                      out_shardings=sharding.replicated(mesh))
  batches = input_pipeline.train_batches(config.dataset, global_batch_size=config.batch_size,
                                         seed=config.seed, start_step=first_step, sharding=batch_sharding)
  eval_batches = lambda: input_pipeline.eval_batches(
      config.dataset, global_batch_size=config.eval_batch_size, sharding=batch_sharding)

  writer = metrics.create_writer(workdir)
  batch = next(batches)
  compiled = train_step.lower(state, batch).compile()
  progress = metrics.Progress(
      first_step=first_step, total_steps=config.total_steps, global_batch_size=config.batch_size,
      step_flops=metrics.compiled_flops(compiled),
      peak_flops_per_device=config.get("peak_flops_per_device") or metrics.device_peak_flops())

  stop = threading.Event()
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.set())
  train_start, eval_metrics, step = time.perf_counter(), {}, first_step
  logging.info("Training %s on %s: steps %d..%d, %d train / %d eval examples, %d devices",
               config.model.model_name, config.dataset.source, first_step, config.total_steps,
               info.num_train_examples, info.num_eval_examples, jax.device_count())
  try:
    while step < config.total_steps:
      state, step_metrics = compiled(state, batch)
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
        eval_metrics = evaluate(eval_step, state.params, eval_batches())
        writer.write_scalars(step, {f"eval_{k}": v for k, v in eval_metrics.items()})
        logging.info("step %d eval: %s", step, eval_metrics)
      preempted = _stop_requested(stop)
      if save_now or preempted:
        workdir_lib.save_state(manager, step, state)
      if preempted:
        logging.warning("SIGTERM: saved step %d and stopping; run again to resume.", step)
        break
      if not is_last:
        batch = next(batches)
  finally:
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
