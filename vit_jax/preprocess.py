"""Image transforms for training and evaluation, in TensorFlow (they run inside tf.data).

Every transform maps {'image': uint8 [H, W, 3], 'label': int64 []} to {'image': float32
[S, S, 3] in [-1, 1], 'label': float32 one-hot [num_classes]}, the model's input convention (a
multi-label example, 'label' int64 [k], gets a multi-hot label).
Randomness is stateless: each random op takes a seed tensor (shape [2]) the caller derives from
(config seed, example position), so an augmented example is a pure function of both.
"""

from collections.abc import Callable

import tensorflow as tf

from vit_jax import randaugment as randaugment_lib

Features = dict[str, tf.Tensor]

# config.dataset.train_augment and config.dataset.eval_preprocess; whose each is: see the functions.
TRAIN_AUGMENTS = ("inception_crop", "resmall_crop", "squash_crop", "resize", "central_crop")
EVAL_PREPROCESSES = ("resize", "resmall_central_crop", "central_crop")
# Names before issue 11 (the old "finetune" was called the official recipe, which it is not).
_RENAMED = {"pretrain": "inception_crop", "finetune": "squash_crop", "none": "central_crop"}
# squash_crop squashes to this multiple of the size, then crops (256 -> 224).
SQUASH_CROP_RATIO = 8 / 7
# big_vision's transfer.py resizes the shorter side to h_res=448 and crops l_res=384: 7/6 of the size.
RESMALL_RATIO = 448 / 384
INCEPTION_AREA_RANGE = (0.05, 1.0)
INCEPTION_ASPECT_RANGE = (3 / 4, 4 / 3)


def normalize(image: tf.Tensor) -> tf.Tensor:
  """[0, 255] -> float32 [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def _resize(image: tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
  return tf.image.resize(image, tf.stack([height, width]), method="bilinear")


def _finish(image: tf.Tensor, label: tf.Tensor, image_size: int, num_classes: int) -> Features:
  image = tf.ensure_shape(normalize(image), [image_size, image_size, 3])
  return {"image": image, "label": encode_label(label, num_classes)}


def encode_label(label: tf.Tensor, num_classes: int) -> tf.Tensor:
  """int64 [] -> one-hot float32 [num_classes]; a set of labels int64 [k] -> multi-hot (all zeros
  for an empty set, which evaluation leaves out: ImageNet-ReaL's images without a valid label)."""
  if label.shape.rank == 0:
    return tf.one_hot(label, num_classes, dtype=tf.float32)
  return tf.minimum(tf.reduce_sum(tf.one_hot(label, num_classes, dtype=tf.float32), axis=0), 1.0)


def central_crop(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """Resizes the shorter side to `image_size`, then cuts the central square (float32 [0, 255]).

  This repository's own evaluation view (neither author's: see `resize`, `resmall_central_crop`).
  """
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = image_size / tf.reduce_min(shape)
  new_shape = tf.cast(tf.math.ceil(shape * scale), tf.int32)
  image = _resize(image, new_shape[0], new_shape[1])
  return tf.image.resize_with_crop_or_pad(image, image_size, image_size)


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """Squashes the whole image to the square, aspect ratio not kept (float32 [0, 255]).

  vision_transformer's evaluation (input_pipeline.py: `tf.image.resize(im, [crop_size, crop_size])`)
  and the VTAB package's view of every task.
  """
  return _resize(image, image_size, image_size)


def resize_small(image: tf.Tensor, smaller_size: int) -> tf.Tensor:
  """big_vision's `resize_small`: shorter side to `smaller_size`, sides rounded, 'area' resampling,
  back to uint8 (clipped, truncated) as big_vision keeps the dtype."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  new_shape = tf.cast(tf.round(shape * smaller_size / tf.reduce_min(shape)), tf.int32)
  resized = tf.image.resize(image, new_shape, method="area")
  return tf.cast(tf.clip_by_value(resized, 0, 255), tf.uint8)


def resmall_central_crop(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """big_vision's transfer evaluation: `resize_small(448)|central_crop(384)` at 384 (7/6 of the size).

  The crop starts at ((H - S) // 2, (W - S) // 2), as big_vision's `central_crop`.
  """
  image = resize_small(image, round(image_size * RESMALL_RATIO))
  offsets = (tf.shape(image)[:2] - image_size) // 2
  return tf.image.crop_to_bounding_box(image, offsets[0], offsets[1], image_size, image_size)


def inception_crop(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
  """A random box of 5%-100% of the area and aspect 3/4-4/3, resized to the square.

  The crop of vision_transformer's fine-tuning (`inception_crop=True`, its default) and of
  big_vision's transfer to ImageNet, Pets and Flowers (`inception_crop(384)`), both with the same
  area range; also both repositories' ImageNet pretraining crop.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=INCEPTION_ASPECT_RANGE,
      area_range=INCEPTION_AREA_RANGE,
      use_image_if_no_bounding_boxes=True)
  return _resize(tf.slice(image, begin, size), image_size, image_size)


def eval_transform(image_size: int, num_classes: int,
                   preprocess: str = "central_crop") -> Callable[[Features], Features]:
  """The deterministic view used for evaluation (config.dataset.eval_preprocess).

  central_crop: shorter side to the size, central square (this repository's). resize: squash to the
  size (vision_transformer's and VTAB's). resmall_central_crop: big_vision's transfer evaluation.
  """
  views = {"central_crop": central_crop, "resize": resize,
           "resmall_central_crop": resmall_central_crop}
  if preprocess not in views:
    raise ValueError(f"config.dataset.eval_preprocess={preprocess!r} is not one of "
                     f"{EVAL_PREPROCESSES}.")

  def transform(features: Features) -> Features:
    image = views[preprocess](features["image"], image_size)
    return _finish(image, features["label"], image_size, num_classes)

  return transform


def train_transform(augment: str, image_size: int, num_classes: int, random_flip: bool = True,
                    randaugment: tuple[int, float] | None = None, randaugment_reference_size: int = 0
                    ) -> Callable[[Features, tf.Tensor], Features]:
  """The training transform `augment` (config.dataset.train_augment) as f(features, seed).

  inception_crop: `inception_crop` + random flip (vision_transformer's fine-tuning; big_vision's
  transfer to ImageNet, Pets, Flowers). resmall_crop: big_vision's transfer to CIFAR, shorter side to
  7/6 of the size (448 for 384), random crop, random flip. squash_crop: this repository's own: squash
  to `SQUASH_CROP_RATIO` x the size, random crop, random flip. resize: squash to the size, no
  randomness (VTAB). central_crop: as the evaluation's `central_crop`, no randomness.
  `random_flip=False` keeps the crops but never mirrors (digits and text are not mirror-symmetric).
  `randaugment=(num_layers, magnitude)` then applies RandAugment (vit_jax/randaugment.py), as
  big_vision's AugReg pipelines do after the crop and flip; its translate and cutout are in big_vision's
  pixels, or, with `randaugment_reference_size` N > 0, scaled by image_size / N (N = 224: a 32-px image
  moves by the same fraction of its side as a 224-px one in big_vision).
  """
  if augment not in TRAIN_AUGMENTS:
    renamed = f" (renamed {_RENAMED[augment]!r})" if augment in _RENAMED else ""
    raise ValueError(
        f"config.dataset.train_augment={augment!r} is not one of {TRAIN_AUGMENTS}{renamed}.")

  def transform(features: Features, seed: tf.Tensor) -> Features:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = features["image"]
    if augment in ("resize", "central_crop"):
      image = resize(image, image_size) if augment == "resize" else central_crop(image, image_size)
    else:
      if augment == "inception_crop":
        image = inception_crop(image, image_size, crop_seed)
      else:
        if augment == "resmall_crop":
          image = resize_small(image, round(image_size * RESMALL_RATIO))
        else:
          side = round(image_size * SQUASH_CROP_RATIO)
          image = _resize(image, side, side)
        image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=crop_seed)
      if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    if randaugment is not None:
      uint8 = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0., 255.), tf.uint8)
      image = randaugment_lib.randaugment(
          uint8, *randaugment, seed=tf.random.experimental.stateless_fold_in(seed, 2),
          pixel_scale=image_size / randaugment_reference_size if randaugment_reference_size else 1.)
    return _finish(image, features["label"], image_size, num_classes)

  return transform


def mixup(batch: Features, alpha: float, seed: tf.Tensor) -> Features:
  """Mixes each example of a batch with its neighbour: lam * x + (1 - lam) * roll(x).

  One lam ~ Beta(alpha, alpha) per batch, drawn from `seed` (shape [2]). Labels must be one-hot (or
  soft) float [B, C]; the mixed labels still sum to 1.
  """
  gammas = tf.random.stateless_gamma([2], seed=seed, alpha=tf.constant(alpha, tf.float64),
                                     dtype=tf.float64)
  lam = tf.cast(gammas[0] / (gammas[0] + gammas[1]), tf.float32)
  mixed = dict(batch)
  for key in ("image", "label"):
    mixed[key] = lam * batch[key] + (1.0 - lam) * tf.roll(batch[key], shift=1, axis=0)
  return mixed


def cutmix(batch: Features, alpha: float, seed: tf.Tensor) -> Features:
  """CutMix (Yun et al. 2019): pastes a box of each example's neighbour (roll by 1) into it.

  One lam ~ Beta(alpha, alpha) per batch; the box has area (1 - lam) of the image around a uniform
  centre, clipped at the borders, and the labels mix by the area actually pasted (timm's
  `rand_bbox` + `correct_lam`). `seed` has shape [2].
  """
  lam_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  gammas = tf.random.stateless_gamma([2], seed=lam_seed, alpha=tf.constant(alpha, tf.float64),
                                     dtype=tf.float64)
  lam = tf.cast(gammas[0] / (gammas[0] + gammas[1]), tf.float32)
  height, width = batch["image"].shape[1], batch["image"].shape[2]
  cut = tf.sqrt(1.0 - lam)
  cut_h, cut_w = tf.cast(height * cut, tf.int32), tf.cast(width * cut, tf.int32)
  center = tf.random.stateless_uniform([2], seed=box_seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
  cy, cx = center[0] % height, center[1] % width
  top, bottom = tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h // 2, 0, height)
  left, right = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w // 2, 0, width)
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  kept = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / float(height * width)
  mixed = dict(batch)
  mixed["image"] = tf.where(box[None, :, :, None], tf.roll(batch["image"], shift=1, axis=0), batch["image"])
  mixed["label"] = kept * batch["label"] + (1.0 - kept) * tf.roll(batch["label"], shift=1, axis=0)
  return mixed
