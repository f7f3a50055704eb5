"""RandAugment (Cubuk et al. 2020) with big_vision's operation set and magnitudes, made stateless.

The ops, their magnitude-to-argument mapping (`_MAX_LEVEL` 10, translate 100 px, cutout 40 px, gray
fill 128) and the layer structure (each of `num_layers` layers applies one op drawn uniformly from the
16, at the fixed `magnitude`) follow big_vision's `pp/autoaugment.py` (`distort_image_with_randaugment`,
forked from tensorflow/tpu), which AugReg's `randaug(2,15)` etc. name. As there, a magnitude above 10
extrapolates (randaug(2,15) translates by 150 px), and Posterize keeps int(4 * magnitude / 10) bits (0
bits at magnitude 0 gives a black image, 8 at 20 leaves it alone). The one change: every random draw
(op, sign, cutout position) comes from a seed tensor [2], so an augmented image is a pure function of
(image, seed) and a resumed run sees the same images. One option: `pixel_scale` multiplies the two
arguments given in pixels (translate, cutout), so that small images can be augmented in proportion,
as timm's relative translate does (big_vision's 100 px move a 32-px image out of its frame).
"""

import math

import tensorflow as tf

_MAX_LEVEL = 10.
TRANSLATE_CONST = 100
CUTOUT_CONST = 40
REPLACE = 128
OP_NAMES = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
            "Cutout", "SolarizeAdd")


def blend(image1: tf.Tensor, image2: tf.Tensor, factor: float) -> tf.Tensor:
  """image1 + factor * (image2 - image1), clipped to [0, 255] and truncated to uint8 (as PIL)."""
  image1, image2 = tf.cast(image1, tf.float32), tf.cast(image2, tf.float32)
  return tf.cast(tf.clip_by_value(image1 + factor * (image2 - image1), 0., 255.), tf.uint8)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel to [0, 255]; a flat channel stays as it is."""

  def channel(x):
    lo, hi = tf.cast(tf.reduce_min(x), tf.float32), tf.cast(tf.reduce_max(x), tf.float32)
    scale = 255. / tf.maximum(hi - lo, 1.)
    scaled = tf.cast(tf.clip_by_value(tf.cast(x, tf.float32) * scale - lo * scale, 0., 255.), tf.uint8)
    return tf.where(hi > lo, scaled, x)

  return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL's histogram equalisation per channel."""

  def channel(x):
    x = tf.cast(x, tf.int32)
    histogram = tf.histogram_fixed_width(x, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram != 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    safe_step = tf.maximum(step, 1)
    lut = (tf.cumsum(histogram) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.cast(tf.where(step == 0, x, tf.gather(lut, x)), tf.uint8)

  return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` high bits of each value (0 bits: all zero)."""
  return tf.bitwise.bitwise_and(image, tf.constant((0xFF << (8 - bits)) & 0xFF, tf.uint8))


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
  return tf.where(image < threshold, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: int, threshold: int = 128) -> tf.Tensor:
  added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
  return tf.where(image < threshold, added, image)


def color(image: tf.Tensor, factor: float) -> tf.Tensor:
  return blend(tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)), image, factor)


def contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
  """big_vision's Contrast: blends towards a flat gray of sum(histogram) / 256 (= pixels / 256, not
  the mean intensity that PIL uses; kept, since AugReg's models were trained with it)."""
  gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.int32)
  histogram = tf.histogram_fixed_width(gray, [0, 255], nbins=256)
  mean = tf.clip_by_value(tf.reduce_sum(tf.cast(histogram, tf.float32)) / 256., 0., 255.)
  degenerate = tf.fill(tf.shape(image), tf.cast(mean, tf.uint8))
  return blend(degenerate, image, factor)


def brightness(image: tf.Tensor, factor: float) -> tf.Tensor:
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
  """Blends with PIL's SMOOTH filter of the image (border pixels kept)."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, shape=[3, 3, 1, 1]) / 13.
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], tf.tile(kernel, [1, 1, 3, 1]),
                                  [1, 1, 1, 1], padding="VALID")[0]
  smooth = tf.pad(tf.cast(tf.clip_by_value(smooth, 0., 255.), tf.uint8), [[1, 1], [1, 1], [0, 0]])
  inner = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
  return blend(tf.where(inner == 1, smooth, image), image, factor)


def _transform(image: tf.Tensor, transform: list) -> tf.Tensor:
  """Projective transform (output pixel -> input pixel), nearest neighbour, gray where empty."""
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(tf.stack(transform)[None], tf.float32),
      output_shape=tf.shape(image)[:2], fill_value=float(REPLACE), interpolation="NEAREST",
      fill_mode="CONSTANT")[0]


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
  """Rotation about the centre, as tensorflow_addons' `rotate`."""
  radians = tf.cast(degrees, tf.float32) * math.pi / 180.
  height, width = (tf.cast(tf.shape(image)[i], tf.float32) - 1. for i in (0, 1))
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = (width - (cos * width - sin * height)) / 2.
  y_offset = (height - (sin * width + cos * height)) / 2.
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0., 0.])


def shear_x(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
  return _transform(image, [1., level, 0., 0., 1., 0., 0., 0.])


def shear_y(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
  return _transform(image, [1., 0., 0., level, 1., 0., 0., 0.])


def translate_x(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
  """Moves the content `pixels` to the left (as big_vision's translate_x)."""
  return _transform(image, [1., 0., pixels, 0., 1., 0., 0., 0.])


def translate_y(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
  return _transform(image, [1., 0., 0., 0., 1., pixels, 0., 0.])


def cutout(image: tf.Tensor, pad_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Fills a (2 pad_size)^2 square centred at a random pixel (clipped at the borders) with gray."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  center = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
  cy, cx = center[0] % height, center[1] % width
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  inside = (rows >= cy - pad_size) & (rows < cy + pad_size) & (cols >= cx - pad_size) & (cols < cx + pad_size)
  return tf.where(inside[..., None], tf.constant(REPLACE, tf.uint8), image)


def _ops(magnitude: float, sign: tf.Tensor, seed: tf.Tensor, pixel_scale: float = 1.) -> list:
  """The 16 ops of OP_NAMES as image -> image, with their arguments at `magnitude`."""
  level = magnitude / _MAX_LEVEL
  translate, cutout_size = level * TRANSLATE_CONST * pixel_scale, int(level * CUTOUT_CONST * pixel_scale)
  enhance = level * 1.8 + 0.1
  return [
      autocontrast, equalize, invert,
      lambda x: rotate(x, sign * level * 30.),
      lambda x: posterize(x, int(level * 4)),
      lambda x: solarize(x, int(level * 256)),
      lambda x: color(x, enhance),
      lambda x: contrast(x, enhance),
      lambda x: brightness(x, enhance),
      lambda x: sharpness(x, enhance),
      lambda x: shear_x(x, sign * level * 0.3),
      lambda x: shear_y(x, sign * level * 0.3),
      lambda x: translate_x(x, sign * translate),
      lambda x: translate_y(x, sign * translate),
      lambda x: cutout(x, cutout_size, seed),
      lambda x: solarize_add(x, int(level * 110)),
  ]


def randaugment(image: tf.Tensor, num_layers: int, magnitude: float, seed: tf.Tensor,
                pixel_scale: float = 1.) -> tf.Tensor:
  """`num_layers` ops, each drawn uniformly from the 16 and applied at `magnitude`, to a uint8
  [H, W, 3] image; a pure function of (image, seed [2]). `pixel_scale` scales translate and cutout."""
  if image.dtype != tf.uint8:
    raise ValueError(f"RandAugment works on uint8 images, got {image.dtype}.")
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num=num_layers)):
    op_seed, sign_seed, cutout_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 3))
    op = tf.random.stateless_uniform([], seed=op_seed, maxval=len(OP_NAMES), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], seed=sign_seed) < 0.5, -1., 1.)
    branches = [lambda f=f: tf.ensure_shape(f(image), image.shape) for f in _ops(magnitude, sign, cutout_seed, pixel_scale)]
    image = tf.switch_case(op, branches)
  return image
