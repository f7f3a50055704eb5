"""The pure step functions and the train state they act on, apart from the loop that drives them.

`train.py` joins these to the data and the checkpoints; benchmarks and notebooks use them alone. This
module imports neither the input pipeline nor any metric writer, so it (and the benchmarks) run where
TensorFlow is not installed, such as a bare GPU machine.
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax import ema
from vit_jax import losses
from vit_jax import models
from vit_jax import optim

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key data: orbax saves it like any array
  ema_params: Any = None  # the parameters' moving average (vit_jax.ema) when config.ema.decay > 0


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  return models.create(config.model, num_classes=config.dataset.num_classes)


def init_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                     tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  """A fresh state: model init, optimizer init, and the key that all later randomness derives from."""
  init_rng, state_rng = jax.random.split(rng)
  size = config.dataset.image_size
  params = model.init(init_rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(state_rng), ema_params=params if ema.enabled(config) else None)


def create_optimizer(config: ml_collections.ConfigDict, model: nn.Module) -> optax.GradientTransformation:
  abstract = jax.eval_shape(lambda: init_train_state(config, model, optax.identity(), jax.random.key(0)))
  return optim.create_optimizer(config.optimizer, config.total_steps, abstract.params)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                    teacher: Any = None) -> Callable[..., tuple[TrainState, dict]]:
  """The pure step; with `optimizer.accum_steps > 1` the batch is split into micro-batches whose
  gradients are averaged in a `lax.scan`, so memory holds one micro-batch of activations.

  With a `teacher` (vit_jax.distillation.Teacher) the step is `train_step(state, batch,
  teacher_params)` and the loss is DeiT's `losses.distillation_loss` of config.distillation.
  """
  loss_fn = losses.loss_fn(config.loss)
  accum_steps = config.optimizer.accum_steps
  schedule = optim.learning_rate_schedule(config.optimizer, config.total_steps)
  keep_ema = ema.enabled(config)

  def micro_loss(params, images, labels, rng, teacher_params):
    if teacher is None:
      logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
      return jnp.mean(loss_fn(logits, labels))
    cls_logits, dist_logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng},
                                          distillation_heads=True)
    return jnp.mean(losses.distillation_loss(
        cls_logits, dist_logits, labels, teacher.logits(teacher_params, images), config.distillation.type,
        alpha=config.distillation.alpha, tau=config.distillation.tau))

  def train_step(state: TrainState, batch: Batch, teacher_params: Any = None) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grad_fn = jax.value_and_grad(micro_loss)
    if accum_steps == 1:
      loss, grads = grad_fn(state.params, batch["image"], batch["label"], rng, teacher_params)
    else:
      split = lambda x: x.reshape((accum_steps, -1) + x.shape[1:])
      micro = (split(batch["image"]), split(batch["label"]), jax.random.split(rng, accum_steps))

      def accumulate(carry, xs):
        loss, grads = grad_fn(state.params, *xs, teacher_params)
        return jax.tree.map(jnp.add, carry, (loss, grads)), None

      zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
      loss, grads = jax.tree.map(lambda x: x / accum_steps, (loss, grads))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step_metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                    "learning_rate": schedule(state.step)}
    ema_params = ema.update(state.ema_params, params, state.step + 1, config.ema) if keep_ema else None
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema_params), step_metrics

  return train_step


def all_finite(tree: Any) -> jax.Array:
  """True when every element of every array in `tree` is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def first_nonfinite_step(first_bad: jax.Array, step_metrics: dict, step: int | jax.Array) -> jax.Array:
  """`first_bad` (0: none yet), or `step` if this is the first step whose loss or gradient norm is
  not finite: the loop folds this over every step on the devices and reads it only when it syncs."""
  finite = jnp.isfinite(step_metrics["loss"]) & jnp.isfinite(step_metrics["grad_norm"])
  return jnp.where((first_bad == 0) & ~finite, step, first_bad).astype(jnp.int32)


def make_eval_step(model: nn.Module) -> Callable[[Any, Batch], dict]:
  """Sums over the real (mask 1) examples of a batch: top-1 and top-5 hits, loss, count.

  A prediction is a hit when its label is among the example's labels: one-hot labels give plain
  accuracy, multi-hot ones ImageNet-ReaL's (Beyer et al. 2020), which also leaves out the examples
  without any label.
  """

  def eval_step(params, batch: Batch) -> dict:
    logits = model.apply({"params": params}, batch["image"], train=False)
    labels = batch["label"]
    counted = batch["mask"] * (jnp.sum(labels, axis=-1) > 0)
    is_label = lambda classes: jnp.take_along_axis(labels, classes, axis=-1) > 0
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    targets = labels / jnp.maximum(jnp.sum(labels, axis=-1, keepdims=True), 1.)
    return {
        "correct": jnp.sum(is_label(jnp.argmax(logits, -1)[:, None])[:, 0] * counted),
        "correct_top5": jnp.sum(jnp.any(is_label(top5), axis=-1) * counted),
        "loss": jnp.sum(optax.softmax_cross_entropy(logits, targets) * counted),
        "count": jnp.sum(counted),
    }

  return eval_step
