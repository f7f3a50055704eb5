"""Few-shot linear evaluation: frozen features -> closed-form ridge regression onto {-1, 1} targets.

Features are the model's pre-logits (the model built with `num_classes=0`: pooled, then the
`pre_logits` layer where the model has one), extracted where the batches live on the mesh. For each
number of shots k and each seed, k training examples per class are drawn, a linear map onto {-1, 1}
one-vs-all targets is fitted in closed form with L2 regularisation, and the score is top-1 accuracy on
the whole test split, averaged over the seeds. Two protocols (`config.fewshot.protocol`):

- big_vision (the default): big_vision's `evaluators/fewshot_lsr.py` with `configs/common_fewshot.py`.
  Each feature is whitened by the mean and std (+1e-5) of the k-shot training set, a constant 100 is
  appended as the bias feature (regularised, but barely), l2_reg 2^10; seed s draws its shots from one
  permutation per class, so the k-shot sets of a seed are nested. An official .npz with a
  `pre_logits` layer is probed on that layer's output (big_vision's `representation_layer`).
- plain (this repository's first protocol): features and targets centred, unpenalised bias, l2_reg 1.0,
  shots drawn anew for each k; an official .npz is probed on its pooled features, before `pre_logits`.

The two can differ by over ten points and rank features differently: report which one a figure used
(`describe`).

Three ways in: `linear_probe_accuracy` / `fewshot_accuracies` on any arrays; `from_config`, which the
train loop calls at every evaluation when the config has a `fewshot` section; and this CLI on a
finished run or a published checkpoint (position embeddings resized to the data's resolution):

  python -m vit_jax.evaluators.fewshot --checkpoint=runs/fmnist --data_config=configs/mnist5k.py
  python -m vit_jax.evaluators.fewshot --checkpoint=ViT-B_16 --model=ViT-B_16 \
      --data_config=configs/transfer/cifar10.py --train_split='train[:5000]'
"""

import argparse
from collections.abc import Callable, Iterable, Iterator, Sequence
import importlib.util
import json
import pathlib
from typing import Any

from etils import epath
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import cpu_devices
from vit_jax import host_memory
from vit_jax import input_pipeline
from vit_jax import models
from vit_jax import pretrained
from vit_jax import sharding
from vit_jax import workdir as workdir_lib

DEFAULT_SHOTS = (1, 5, 10, 25)
PROTOCOLS = ("big_vision", "plain")
# Each protocol's L2 regularisation, unless config.fewshot.l2_reg sets one.
DEFAULT_L2_REG = {"big_vision": 2.0 ** 10, "plain": 1.0}
# big_vision's constant bias feature and the epsilon of its whitening (fewshot_lsr.py).
BIAS_FEATURE = 100.0
WHITENING_EPS = 1e-5
# The keys of a config's `fewshot` section; its `dataset` overrides keys of the config's `dataset`.
CONFIG_KEYS = ("dataset", "shots", "seeds", "l2_reg", "batch_size", "protocol")


def _checked(features: Any, labels: Any, num_classes: int,
             l2_reg: float) -> tuple[np.ndarray, np.ndarray]:
  """Features as float64 [N, D] and targets one-hot in {-1, 1} [N, C], or a ValueError."""
  if l2_reg <= 0:
    raise ValueError(f"l2_reg must be > 0 (got {l2_reg}): few-shot systems are singular without it.")
  x = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  if x.ndim != 2 or labels.shape != (len(x),):
    raise ValueError(f"Expected features [N, D] and labels [N]; got {x.shape} and {labels.shape}.")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"Labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}].")
  return x, 2. * np.eye(num_classes)[labels] - 1.


def _ridge(x: np.ndarray, y: np.ndarray, l2_reg: float) -> np.ndarray:
  """argmin_W |XW - Y|^2 + l2_reg |W|^2, in the primal (D x D) or, with fewer examples than
  features, the dual (N x N) form: the same solution."""
  num_examples, dim = x.shape
  if dim <= num_examples:
    return np.linalg.solve(x.T @ x + l2_reg * np.eye(dim), x.T @ y)
  return x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(num_examples), y)


def fit_linear_probe(features: Any, labels: Any, num_classes: int,
                     l2_reg: float) -> tuple[np.ndarray, np.ndarray]:
  """The plain protocol: weights [D, C] and bias [C] minimising |XW + b - Y|^2 + l2_reg |W|^2.

  The bias is not penalised (features and targets are centred). Solved in float64.
  """
  x, y = _checked(features, labels, num_classes, l2_reg)
  x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
  weights = _ridge(x - x_mean, y - y_mean, l2_reg)
  return weights, y_mean - x_mean @ weights


def _with_bias_feature(x: np.ndarray) -> np.ndarray:
  return np.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_FEATURE)


def fit_whitened_probe(features: Any, labels: Any, num_classes: int,
                       l2_reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """big_vision's protocol: (mean [D], std [D], weights [D + 1, C]) of the ridge regression on the
  whitened features with a constant `BIAS_FEATURE` appended (its weight is the bias). Solved in
  float64; big_vision solves the same system through an eigendecomposition, in float32."""
  x, y = _checked(features, labels, num_classes, l2_reg)
  mean, std = x.mean(axis=0), x.std(axis=0) + WHITENING_EPS
  return mean, std, _ridge(_with_bias_feature((x - mean) / std), y, l2_reg)


def linear_probe_accuracy(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any,
                          num_classes: int, l2_reg: float, protocol: str = "big_vision") -> float:
  """Top-1 test accuracy of the `protocol`'s ridge-regression probe fitted on the training features."""
  test_features = np.asarray(test_features, np.float64)
  if protocol == "big_vision":
    mean, std, weights = fit_whitened_probe(train_features, train_labels, num_classes, l2_reg)
    scores = _with_bias_feature((test_features - mean) / std) @ weights
  else:
    weights, bias = fit_linear_probe(train_features, train_labels, num_classes, l2_reg)
    scores = test_features @ weights + bias
  return float(np.mean(np.argmax(scores, axis=1) == np.asarray(test_labels)))


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
  """Indices of `shots` random examples of each class (all of a class that has fewer)."""
  rng = np.random.default_rng(seed)
  return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:shots]
                         for c in np.unique(labels)])


def check_protocol(protocol: str) -> None:
  if protocol not in PROTOCOLS:
    raise ValueError(f"config.fewshot.protocol={protocol!r} is not one of {PROTOCOLS}.")


def describe(protocol: str = "big_vision", l2_reg: float | None = None) -> str:
  """How the figures of `protocol` were computed, in words, for the tables that report them."""
  check_protocol(protocol)
  l2_reg = DEFAULT_L2_REG[protocol] if l2_reg is None else l2_reg
  if protocol == "big_vision":
    return (f"big_vision's few-shot protocol: whitened features, ridge regression onto {{-1, 1}} "
            f"targets, l2 {l2_reg:g}")
  return (f"plain few-shot protocol: centred features, ridge regression onto {{-1, 1}} targets, "
          f"l2 {l2_reg:g}")


def fewshot_accuracies(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any,
                       num_classes: int, *, shots: Sequence[int] = DEFAULT_SHOTS, seeds: int = 3,
                       l2_reg: float | None = None, protocol: str = "big_vision") -> dict[int, float]:
  """{k: test accuracy of probes fitted on k examples per class, averaged over `seeds` draws}.

  `l2_reg` None: the protocol's (`DEFAULT_L2_REG`). big_vision draws seed s's shots from one
  permutation per class (nested k-shot sets); plain draws them anew for each k.
  """
  check_protocol(protocol)
  l2_reg = DEFAULT_L2_REG[protocol] if l2_reg is None else l2_reg
  train_features, train_labels = np.asarray(train_features), np.asarray(train_labels)
  results = {}
  for k in shots:
    accuracies = []
    for seed in range(seeds):
      chosen = sample_shots(train_labels, k, seed=seed if protocol == "big_vision" else k * 1000 + seed)
      accuracies.append(linear_probe_accuracy(train_features[chosen], train_labels[chosen],
                                              test_features, test_labels, num_classes, l2_reg,
                                              protocol))
    results[k] = float(np.mean(accuracies))
  return results


def extract_features(features_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                     batches: Iterable[dict[str, jax.Array]]) -> tuple[np.ndarray, np.ndarray]:
  """Features and integer labels of the real (mask 1) examples of `batches`, on every process.

  `batches` are global arrays sharded over the mesh (`input_pipeline.eval_passes`); `features_fn`
  (jitted) runs where they live, and only the features are gathered to the hosts.
  """
  features, labels = [], []
  for batch in batches:
    out, label, mask = multihost_utils.process_allgather(
        (features_fn(params, batch["image"]), jnp.argmax(batch["label"], -1), batch["mask"]), tiled=True)
    keep = mask > 0
    features.append(out[keep])
    labels.append(label[keep])
  return np.concatenate(features), np.concatenate(labels)


class Evaluator:
  """Few-shot accuracies of a model's params on one data set: `evaluator(params) -> {name: value}`."""

  def __init__(self, model_config: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, *, shots: Sequence[int] = DEFAULT_SHOTS, seeds: int = 3,
               l2_reg: float | None = None, batch_size: int = 512, protocol: str = "big_vision"):
    check_protocol(protocol)
    self._model: nn.Module = models.create(model_config, num_classes=0)
    self._data = data_config
    self._sharding = sharding.batch_sharding(mesh)
    self._settings = dict(shots=tuple(shots), seeds=seeds, l2_reg=l2_reg, protocol=protocol)
    self._batch_size = batch_size
    self._features_fn = jax.jit(lambda params, images: self._model.apply(
        {"params": params}, images, train=False))
    # Read once: the probes run at every evaluation of a training run.
    self._passes = {split: self._eval_passes(split)
                    for split in (data_config.train_split, data_config.eval_split)}

  def _eval_passes(self, split: str) -> Callable[[], Iterator[Any]]:
    data = ml_collections.ConfigDict(self._data.to_dict())
    data.eval_split = split
    return input_pipeline.eval_passes(data, global_batch_size=self._batch_size,
                                      sharding=self._sharding)

  def features(self, params: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    passes = self._passes.get(split) or self._eval_passes(split)
    backbone = {name: value for name, value in params.items() if name != "head"}
    return extract_features(self._features_fn, backbone, passes())

  def __call__(self, params: Any) -> dict[str, float]:
    train = self.features(params, self._data.train_split)
    test = self.features(params, self._data.eval_split)
    accuracies = fewshot_accuracies(*train, *test, self._data.num_classes, **self._settings)
    return {f"fewshot_{k}shot": accuracy for k, accuracy in accuracies.items()}


def from_config(config: ml_collections.ConfigDict,
                mesh: jax.sharding.Mesh) -> Callable[[Any], dict[str, float]]:
  """The periodic evaluator that `config.fewshot` describes (a no-op without that section).

  `config.fewshot.dataset` overrides keys of `config.dataset` (source, name, splits, num_classes):
  the features are the training model's at its own resolution. Slice a large train split
  (`train[:2000]`): all of it is embedded at every evaluation.
  """
  fewshot = config.get("fewshot")
  if not fewshot or not fewshot.shots:
    return lambda params: {}
  unknown = sorted(set(fewshot) - set(CONFIG_KEYS))
  if unknown:
    raise ValueError(f"Unknown keys {unknown} in config.fewshot; valid keys: {list(CONFIG_KEYS)}.")
  data = ml_collections.ConfigDict(config.dataset.to_dict())
  overrides = fewshot.get("dataset") or {}
  bad = sorted(set(overrides) - set(data) | set(overrides) & {"image_size"})
  if bad:
    raise ValueError(f"config.fewshot.dataset cannot set {bad}: it overrides keys of config.dataset "
                     f"other than image_size (the model's): {sorted(set(data) - {'image_size'})}.")
  data.update(dict(overrides))
  settings = {key: fewshot[key] for key in CONFIG_KEYS[1:] if key in fewshot}  # else the defaults
  return Evaluator(config.model, data, mesh, **settings)


def evaluate_checkpoint(checkpoint: str, data_config: ml_collections.ConfigDict, *,
                        model_config: ml_collections.ConfigDict | None = None,
                        **settings) -> dict[str, float]:
  """Few-shot accuracies of one of our workdirs, an official .npz or a registered checkpoint name.

  A workdir brings its model config; an .npz needs `model_config` (see `npz_features_config` for
  its `pre_logits` layer). The params are adapted as for fine-tuning (position embeddings resized to
  `data_config.image_size`, head dropped). `settings`: shots, seeds, l2_reg, batch_size, protocol
  (see `Evaluator`).
  """
  from vit_jax import train  # pylint: disable=g-import-not-at-top  (train imports this module)

  if (epath.Path(checkpoint) / workdir_lib.CONFIG_FILE).exists():
    model_config = workdir_lib.read_config(checkpoint).model
  elif model_config is None:
    raise ValueError(f"{checkpoint} is not a workdir: give the model config of the .npz (--model).")
  else:
    model_config = npz_features_config(checkpoint, model_config, settings.get("protocol", "big_vision"))
  size = data_config.image_size
  abstract = jax.eval_shape(lambda: models.create(model_config, num_classes=0).init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)["params"])
  params = train.load_init_params(
      ml_collections.ConfigDict(dict(init_checkpoint=checkpoint, model=model_config, init_keep_head=False,
                                     init_use_ema=False)), abstract)
  mesh = sharding.create_mesh(ml_collections.ConfigDict(dict(data=-1, model=1)))
  evaluator = Evaluator(model_config, data_config, mesh, **settings)
  return evaluator(jax.device_put(params, sharding.replicated(mesh)))


def npz_features_config(checkpoint: str, model_config: ml_collections.ConfigDict,
                        protocol: str) -> ml_collections.ConfigDict:
  """The model config whose features (num_classes=0) the `protocol` probes on an official .npz.

  big_vision probes the output of the checkpoint's `pre_logits` layer (ImageNet-21k checkpoints have
  one), so `representation_size` comes from the checkpoint; plain probes `model_config` as given
  (a named model has no `pre_logits` layer: the pooled features).
  """
  check_protocol(protocol)
  config = model_config.copy_and_resolve_references()
  if protocol == "big_vision":
    with pretrained.resolve(checkpoint).open("rb") as f, np.load(f) as npz:
      if "pre_logits/kernel" in npz.files:
        config.representation_size = int(npz["pre_logits/kernel"].shape[-1])
  return config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` -> its `get_config(arg)`, as `--config` of vit_jax.main reads it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  if module_spec is None or not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"Config file {path} not found.")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _data_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The data the probes use: the data config's `dataset` with its `fewshot.dataset` on top."""
  if args.data_config:
    config = load_config(args.data_config)
  elif (epath.Path(args.checkpoint) / workdir_lib.CONFIG_FILE).exists():
    config = workdir_lib.read_config(args.checkpoint)
  else:
    raise SystemExit("--data_config is needed unless --checkpoint is one of our workdirs.")
  data = ml_collections.ConfigDict(config.dataset.to_dict())
  if config.get("fewshot") and config.fewshot.get("dataset"):
    data.update(dict(config.fewshot.dataset))
  for key in ("train_split", "eval_split"):
    if getattr(args, key):
      data[key] = getattr(args, key)
  return data


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", required=True,
                      help="One of our workdirs, an official .npz, or a registered name (ViT-B_16).")
  parser.add_argument("--model", help="Named model of an .npz (e.g. ViT-B_16); not for workdirs.")
  parser.add_argument("--data_config", help="Experiment config (path[:arg]) whose `dataset` (and "
                      "`fewshot.dataset`) gives the data; default: the workdir's own.")
  parser.add_argument("--train_split", help="Override the split the shots are drawn from.")
  parser.add_argument("--eval_split", help="Override the test split.")
  parser.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS))
  parser.add_argument("--seeds", type=int, default=3, help="Draws of the shots to average over.")
  parser.add_argument("--protocol", choices=PROTOCOLS, default="big_vision",
                      help="big_vision's (whitened, pre_logits) or the plain one (module docstring).")
  parser.add_argument("--l2_reg", type=float, help="Ridge regularisation (default: the protocol's, "
                      f"{DEFAULT_L2_REG}).")
  parser.add_argument("--batch_size", type=int, default=512,
                      help="Feature-extraction batch (a multiple of the device count).")
  args = parser.parse_args(argv)
  cpu_devices.use_host_devices([args.batch_size])  # before JAX starts: the batch split over the cores
  host_memory.reuse_freed_memory_on_cpu()
  from configs import models as model_configs  # pylint: disable=g-import-not-at-top

  model_config = model_configs.get_model_config(args.model) if args.model else None
  results = evaluate_checkpoint(args.checkpoint, _data_config(args), model_config=model_config,
                                shots=args.shots, seeds=args.seeds, l2_reg=args.l2_reg,
                                protocol=args.protocol,
                                batch_size=args.batch_size)
  print(json.dumps(results), flush=True)


if __name__ == "__main__":
  main()
