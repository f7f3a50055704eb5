"""Point clouds -> images: the shared last step of every synthetic family (numpy, a batch at once).

A family draws a point cloud per image (the attractor of a fractal, the outlines of contours);
`draw` fits each into its image at a random scale and position and lights every pixel a point falls
in, in one colour on black, as FractalDB does.
"""

import colorsys

import numpy as np

# The shape fills this fraction of the image side, drawn per instance (FractalDB fits every shape
# to the whole image; a range of sizes and places keeps them from being cues of the category).
MIN_SCALE, MAX_SCALE = 0.6, 1.0
GRAY = 255


def draw(points: np.ndarray, rngs: list[np.random.Generator], image_size: int,
         colour: bool) -> np.ndarray:
  """float [B, 2, P] points (x and y; any range, non-finite ones not drawn) -> uint8 [B, S, S, 3]."""
  batch = len(points)
  finite = np.isfinite(points).all(axis=1, keepdims=True)
  points = np.where(finite, points, np.nan)
  low, high = np.nanmin(points, axis=2, keepdims=True), np.nanmax(points, axis=2, keepdims=True)
  with np.errstate(invalid="ignore", over="ignore"):
    unit = (points - low) / np.maximum(high - low, 1e-12)  # each axis to [0, 1], as FractalDB does
  placement = np.stack([rng.random(5) for rng in rngs])  # scale, offset x, y, hue, saturation
  scale = MIN_SCALE + (MAX_SCALE - MIN_SCALE) * placement[:, :1, None]
  offset = (1 - scale) * placement[:, 1:3, None]
  pixels = np.clip((offset + scale * unit) * image_size, 0, image_size - 1)
  drawn = np.isfinite(pixels).all(axis=1)
  pixels = np.where(drawn[:, None], pixels, 0).astype(np.int64)
  flat = (np.arange(batch)[:, None] * image_size + pixels[:, 1]) * image_size + pixels[:, 0]
  lit = np.bincount(flat[drawn], minlength=batch * image_size**2).reshape(
      batch, image_size, image_size, 1) > 0
  if colour:
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.5 + 0.5 * s, 1.0) for h, s in placement[:, 3:5]]) * 255
  else:
    rgb = np.full((batch, 3), GRAY)
  return lit * np.round(rgb).astype(np.uint8)[:, None, None, :]
