"""Classify images with an official `.npz` checkpoint or one of our workdirs.

  python -m vit_jax.predict --model=ViT-B_16 --checkpoint=ViT-B_16-imagenet2012 photo.jpg photos/
  python -m vit_jax.predict --workdir=runs/digits --csv=predictions.csv digits/

Images go through an evaluation transform of `vit_jax.preprocess` (the run's own
`config.dataset.eval_preprocess` for a workdir; vision_transformer's, a squash to the checkpoint's
resolution, for an official `.npz`), to [-1, 1], after decoding as the training pipeline decodes image folders
(grayscale and RGBA become RGB). A file that is not an image is reported and skipped, and the rest are
still classified. Exit status: 0 all classified, 1 some skipped, 2 nothing done (a model, checkpoint or
labels file that cannot be used, an input path that does not exist, a --csv file that cannot be
written, or no images).
"""

import argparse
import contextlib
import csv
import dataclasses
import functools
import math
import pathlib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from tensorflow_datasets.datasets.siscore import labels as imagenet_labels
import tqdm

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import cpu_devices
from vit_jax import data_sources
from vit_jax import host_memory
from vit_jax import models
from vit_jax import preprocess
from vit_jax import pretrained
from vit_jax import sharding
from vit_jax import workdir

Params = Any
# Folders are searched (recursively) for these; files named explicitly are tried whatever their name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
_POSEMB = "Transformer/posembed_input/pos_embedding"
# How the official fine-tuned checkpoints were evaluated: vision_transformer squashes to the size.
OFFICIAL_VIEW = "resize"
# TensorFlow wraps an op's error in the op's name and device: "{{function_node ...}} what [Op:X] name: ".
_TF_ERROR_NOISE = re.compile(r"\{\{.*?\}\}|\[Op:.*$")


class _ByIdentity:
  """A flax module (unhashable: it holds dicts) as a static jit argument: one compile per model object."""

  def __init__(self, module: nn.Module):
    self.module = module

  def __hash__(self):
    return id(self.module)

  def __eq__(self, other):
    return isinstance(other, _ByIdentity) and other.module is self.module


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(model: _ByIdentity, params: Params, images: jax.Array, top_k: int):
  probs = jax.nn.softmax(model.module.apply({"params": params}, images, train=False))
  return jax.lax.top_k(probs, top_k)[1], probs


def batch_shardings(batch_size: int) -> tuple[jax.sharding.NamedSharding, jax.sharding.NamedSharding]:
  """(replicated, batch-split) over as many local devices as divide the batch (at most
  `cpu_devices.MAX_HOST_DEVICES`).

  With `cpu_devices`' host devices the cores run their shares side by side: on 2 cores ViT-S/16 (batch 32)
  classified 1.17x and the digits model 2x as fast as on one device, with the same probabilities.
  """
  devices = jax.local_devices()
  count = cpu_devices.host_device_count([batch_size], len(devices))
  mesh = jax.sharding.Mesh(np.asarray(devices[:count]), ("data",))
  return sharding.replicated(mesh), sharding.batch_sharding(mesh)


def classify(model: nn.Module, params: Params, images: np.ndarray | jax.Array,
             top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """Returns (top-k class ids [B, k], most likely first; softmax probabilities [B, num_classes]).

  `images` are model inputs: float [B, H, W, 3] in [-1, 1] at the model's resolution (see `prepare`).
  The batch is split over the local devices that divide it; pass params already placed with
  `batch_shardings(len(images))[0]` to skip copying them to each device at every call.
  """
  if np.ndim(images) != 4 or np.shape(images)[-1] != 3:
    raise ValueError(f"classify expects images [B, H, W, 3] in [-1, 1], got shape {np.shape(images)}; "
                     "use vit_jax.predict.prepare on each uint8 image first.")
  top_k = min(top_k, model.num_classes)
  replicated, split = batch_shardings(len(images))
  images = jax.device_put(np.asarray(images, np.float32), split)
  ids, probs = _forward(_ByIdentity(model), jax.device_put(params, replicated), images, top_k)
  return np.asarray(ids), np.asarray(probs)


def read_image(path: str | pathlib.Path) -> np.ndarray:
  """uint8 [H, W, 3], decoded as `data_sources` decodes image folders; ValueError if not an image."""
  try:
    return tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False).numpy()
  except tf.errors.OpError as e:
    reason = _TF_ERROR_NOISE.sub("", e.message.splitlines()[0]).strip()
    raise ValueError(f"{path}: not a readable image ({reason})") from e


def prepare(image: np.ndarray, image_size: int, view: str = "central_crop") -> np.ndarray:
  """uint8 [H, W] or [H, W, 1|3|4] of any size -> float32 [S, S, 3] in [-1, 1], as evaluation sees it
  (`view`: a config.dataset.eval_preprocess)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"prepare expects uint8 pixels (0-255), got {image.dtype}; convert with "
                     "skimage.util.img_as_ubyte or (x * 255).round().astype(np.uint8).")
  if image.ndim == 2:
    image = image[..., None]
  rgb = data_sources.to_rgb(tf.constant(image))
  # The evaluation transform itself, so that prediction can never drift from evaluation; the label is
  # a placeholder it needs.
  transform = preprocess.eval_transform(image_size, num_classes=1, preprocess=view)
  return transform({"image": rgb, "label": tf.constant(0)})["image"].numpy()


def load_checkpoint(model_config: ml_collections.ConfigDict, path: str | pathlib.Path,
                    image_size: int | None = None) -> tuple[nn.Module, Params, int]:
  """(model, params, image_size) of an official `.npz` (a path or a `vit_jax.pretrained` name).

  The checkpoint's head, pre-logits layer and position embedding decide `num_classes`,
  `representation_size` and (unless given) `image_size`: prediction must use the trained weights as they
  are, never a freshly initialised head. Anything else that does not fit raises a ValueError.
  """
  flat = checkpoint.load_npz(pretrained.resolve(str(path)))
  if "head/kernel" not in flat:
    raise ValueError(f"{path} has no classification head (head/kernel): it is a feature extractor. "
                     "Fine-tune it on labelled data first (python -m vit_jax.main).")
  config = model_config.copy_and_resolve_references()
  config.num_classes = int(flat["head/kernel"].shape[-1])
  config.representation_size = (int(flat["pre_logits/kernel"].shape[-1])
                                if "pre_logits/kernel" in flat else None)
  model = models.create(config)
  if image_size is None:
    image_size = _trained_resolution(model, flat, path)
  # `fit` wants arrays to check shapes against; np.zeros pages that are never touched cost no memory.
  shapes = jax.eval_shape(lambda: _init(model, image_size))
  init = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  restored = checkpoint.params_from_flat(flat, scan=bool(config.get("scan", False)))
  try:
    params = checkpoint.fit(restored, init, config)
  except ValueError as e:
    raise ValueError(f"Checkpoint {path} does not fit model {config.model_name}: {e}") from e
  return model, params, image_size


def load_workdir(path: str | pathlib.Path, use_ema: bool = False) -> tuple[nn.Module, Params, int]:
  """(model, params, image_size) of a training run: its config and latest checkpoint (its EMA params
  with `use_ema`)."""
  config, params = workdir.load_params(path, use_ema=use_ema)
  model = models.create(config.model, num_classes=config.dataset.num_classes)
  return model, params, config.dataset.image_size


def _init(model: nn.Module, image_size: int) -> Params:
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return model.init(jax.random.key(0), images, train=False)["params"]


def _trained_resolution(model: nn.Module, flat: dict[str, np.ndarray], path: str | pathlib.Path) -> int:
  """The image size whose patch grid matches the checkpoint's position embedding."""
  if _POSEMB not in flat or model.posemb != "learn":
    raise ValueError(f"Cannot tell the resolution of {path} (no learned position embedding): "
                     "pass image_size (--image_size).")
  # A square grid, after at most one class token: the grid side is the integer square root.
  tokens = flat[_POSEMB].shape[1]
  grid = math.isqrt(tokens)
  if tokens - grid * grid > 1:
    raise ValueError(f"Cannot tell the resolution of {path}: its position embedding has {tokens} tokens, "
                     "not a square patch grid (after a class token); pass image_size (--image_size).")
  # One abstract init at a probe size gives the pixels per grid cell, ResNet stem included.
  probe = 64 * model.patches[0]
  probe_tokens = jax.eval_shape(lambda: _init(model, probe))["Transformer"]["posembed_input"][
      "pos_embedding"].shape[1]
  return grid * probe // math.isqrt(probe_tokens)


def class_names(labels: str | None, num_classes: int) -> list[str]:
  """Names of the classes: `labels` is 'imagenet', a file with one name per line, or None (ImageNet-1k
  names for a 1000-class model, else the class indices)."""
  if labels is None:
    return class_names("imagenet", 1000) if num_classes == 1000 else [str(i) for i in range(num_classes)]
  if labels == "imagenet":
    names, source = list(imagenet_labels.IMAGENET_LABELS_LIST), "ImageNet-1k"
  else:
    names = [line.strip() for line in pathlib.Path(labels).read_text().splitlines() if line.strip()]
    source = f"Labels file {labels}"
  if len(names) != num_classes:
    raise ValueError(f"{source} has {len(names)} class names but the model has {num_classes} classes.")
  return names


@dataclasses.dataclass(frozen=True)
class _Result:
  path: pathlib.Path
  class_ids: np.ndarray | None = None  # [k], most likely first
  probabilities: np.ndarray | None = None  # [k]
  error: str | None = None


def _image_paths(inputs: Sequence[str]) -> list[pathlib.Path]:
  paths = []
  for name in inputs:
    path = pathlib.Path(name)
    if path.is_dir():
      paths += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
      paths.append(path)
  return paths


def _classify_files(model: nn.Module, params: Params, image_size: int, view: str,
                    paths: list[pathlib.Path], top_k: int, batch_size: int) -> Iterator[_Result]:
  """Results in the order of `paths`; batches are padded to one shape so the forward compiles once."""
  batch_size = min(batch_size, len(paths))
  params = jax.device_put(params, batch_shardings(batch_size)[0])  # once, not at every batch
  for start in range(0, len(paths), batch_size):
    good, images = [], []
    for path in paths[start:start + batch_size]:
      try:
        images.append(prepare(read_image(path), image_size, view))
        good.append(path)
      except ValueError as e:
        yield _Result(path, error=str(e))
    if not images:
      continue
    padded = np.zeros((batch_size,) + images[0].shape, np.float32)
    padded[:len(images)] = images
    ids, probs = classify(model, params, padded, top_k)
    for i, path in enumerate(good):
      yield _Result(path, ids[i], probs[i, ids[i]])


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m vit_jax.predict", description="Top-k classes of images with a ViT checkpoint.")
  parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                      help=f"image files, or folders searched recursively for {', '.join(IMAGE_SUFFIXES)}")
  parser.add_argument("--model", help=f"model name: {', '.join(model_configs.MODEL_NAMES)}")
  parser.add_argument("--checkpoint", help="official .npz (local, gs://) or a published name, e.g. "
                      "ViT-B_16-imagenet2012")
  parser.add_argument("--workdir", help="a training run's workdir, instead of --model/--checkpoint")
  parser.add_argument("--use_ema", action="store_true",
                      help="with --workdir: the moving average of the params (runs with config.ema.decay > 0)")
  parser.add_argument("--labels", help="'imagenet' or a file with one class name per line (default: "
                      "ImageNet-1k names for 1000 classes, else class indices)")
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, help="default: the checkpoint's resolution")
  parser.add_argument("--csv", help="write path,label,probability,class_id (top-1) per image here")
  args = parser.parse_args(argv)
  if bool(args.workdir) == bool(args.model or args.checkpoint):
    parser.error("pass either --workdir, or both --model and --checkpoint")
  if args.use_ema and not args.workdir:
    parser.error("--use_ema needs --workdir (an .npz checkpoint holds one set of params)")
  if not args.workdir and not (args.model and args.checkpoint):
    parser.error("--model and --checkpoint go together")
  if args.top_k < 1 or args.batch_size < 1:
    parser.error("--top_k and --batch_size must be positive")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Prints the top-k classes of each image; returns the exit status (see the module docstring).

  Inputs that do not exist and a --csv file that cannot be written end the run (status 2) before
  the model is loaded, so that no classification is lost.
  """
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  cpu_devices.use_host_devices([args.batch_size])  # before JAX starts: the batch split over the cores
  host_memory.reuse_freed_memory_on_cpu()
  missing = [name for name in args.images if not pathlib.Path(name).exists()]
  if missing:
    print(f"error: no such file or folder: {' '.join(missing)}", file=sys.stderr)
    return 2
  try:
    csv_file = open(args.csv, "w", newline="") if args.csv else contextlib.nullcontext()
  except OSError as e:
    print(f"error: cannot write --csv={args.csv}: {e.strerror or e}", file=sys.stderr)
    return 2
  with csv_file as f:
    return _predict(args, f)


def _predict(args: argparse.Namespace, csv_file: TextIO | None) -> int:
  try:
    if args.workdir:
      model, params, image_size = load_workdir(args.workdir, use_ema=args.use_ema)
      view = workdir.read_config(args.workdir).dataset.get("eval_preprocess", "central_crop")
    else:
      model, params, image_size = load_checkpoint(
          model_configs.get_model_config(args.model), args.checkpoint, args.image_size)
      view = OFFICIAL_VIEW
    names = class_names(args.labels, model.num_classes)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = _image_paths(args.images)
  if not paths:
    print(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {' '.join(args.images)}", file=sys.stderr)
    return 2

  results = []
  with tqdm.tqdm(total=len(paths), unit="image", file=sys.stderr, disable=None) as bar:
    for result in _classify_files(model, params, image_size, view, paths, args.top_k,
                                  args.batch_size):
      if result.error:
        tqdm.tqdm.write(f"skipped {result.error}", file=sys.stderr)
      else:
        lines = [f"  {p:7.2%}  {names[i]}" for i, p in zip(result.class_ids, result.probabilities)]
        tqdm.tqdm.write("\n".join([str(result.path)] + lines), file=sys.stdout)
      results.append(result)
      bar.update()

  classified = [r for r in results if not r.error]
  if csv_file:
    writer = csv.writer(csv_file)
    writer.writerow(["path", "label", "probability", "class_id"])
    for r in classified:
      writer.writerow([r.path, names[r.class_ids[0]], f"{r.probabilities[0]:.6f}", r.class_ids[0]])
  skipped = len(results) - len(classified)
  print(f"Classified {len(classified)} image(s)" + (f"; skipped {skipped} unreadable file(s)."
                                                    if skipped else "."), file=sys.stderr)
  return 1 if skipped else 0


if __name__ == "__main__":
  sys.exit(main())
