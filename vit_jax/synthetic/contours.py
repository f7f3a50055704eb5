"""Radial contours in the manner of RCDB (Kataoka et al., CVPR 2022): one category, one contour set.

A category is a family of L nested polygons of V vertices around a centre (contour l has radius
l / L), whose vertex radii are bent by a smooth random profile of amplitude `amplitude` (RCDB bends
them with Perlin noise; we use a sum of a few random harmonics of the angle, also smooth and
periodic). V, L, the amplitude and the profile are a pure function of (data seed, category).

An instance rotates the figure, scales its bending by a factor in [0.8, 1.2] and draws the outlines
with a random line width; `raster.draw` places and colours it. All numpy, vectorised over a batch.
"""

import numpy as np

MIN_VERTICES, MAX_VERTICES = 3, 12
MIN_CONTOURS, MAX_CONTOURS = 1, 8
MAX_AMPLITUDE = 0.4
HARMONICS = 3
MIN_WEIGHT, MAX_WEIGHT = 0.8, 1.2
MIN_LINE_WIDTH, MAX_LINE_WIDTH = 0.002, 0.01  # spread of the points around an outline
POINTS_PER_PIXEL = 1.0
_NUM_FIELDS = 3  # vertices, contours, amplitude; then the profile at each vertex


def categories(data_seed: int, num_categories: int) -> np.ndarray:
  """float32 [num_categories, 3 + MAX_VERTICES]: V, L, amplitude, then V vertex profile values."""
  table = np.zeros((num_categories, _NUM_FIELDS + MAX_VERTICES), np.float32)
  for category in range(num_categories):
    rng = np.random.default_rng([data_seed, category])
    vertices = rng.integers(MIN_VERTICES, MAX_VERTICES + 1)
    contours = rng.integers(MIN_CONTOURS, MAX_CONTOURS + 1)
    angles = 2 * np.pi * np.arange(vertices) / vertices
    frequencies = np.arange(1, HARMONICS + 1)[:, None]
    profile = (rng.normal(size=(HARMONICS, 1)) / frequencies
               * np.cos(frequencies * angles + rng.uniform(0, 2 * np.pi, (HARMONICS, 1)))).sum(0)
    table[category, :_NUM_FIELDS] = vertices, contours, rng.uniform(0, MAX_AMPLITUDE)
    table[category, _NUM_FIELDS:_NUM_FIELDS + vertices] = profile / max(np.abs(profile).max(), 1e-6)
  return table


def points(table_rows: np.ndarray, rngs: list[np.random.Generator], num_points: int) -> np.ndarray:
  """float32 [B, 2, num_points]: points on the outlines of one instance of each category (table rows)."""
  batch = len(table_rows)
  vertices, contours, amplitude = (table_rows[:, i:i + 1] for i in range(_NUM_FIELDS))
  profile = table_rows[:, _NUM_FIELDS:]
  draws = np.stack([rng.random(3 + 4 * num_points, np.float32) for rng in rngs])
  rotation = 2 * np.pi * draws[:, :1]
  amplitude = amplitude * (MIN_WEIGHT + (MAX_WEIGHT - MIN_WEIGHT) * draws[:, 1:2])
  width = MIN_LINE_WIDTH + (MAX_LINE_WIDTH - MIN_LINE_WIDTH) * draws[:, 2:3]
  which, along, jitter_radius, jitter_angle = draws[:, 3:].reshape(batch, 4, num_points).transpose(
      1, 0, 2)
  contour = np.floor(which * contours) + 1  # each point: a contour, and a place on its outline:
  along = along * vertices  # edge k (from vertex k to k + 1), fraction t of the way
  edge = np.floor(along)
  t = along - edge

  def corner(k: np.ndarray) -> np.ndarray:
    bend = np.take_along_axis(profile, (k % vertices).astype(int), axis=1)
    radius = contour / contours * (1 + amplitude * bend)
    angle = 2 * np.pi * k / vertices + rotation
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)

  outline = corner(edge) * (1 - t)[:, None] + corner(edge + 1) * t[:, None]
  spread = width * np.sqrt(-2 * np.log(np.maximum(jitter_radius, 1e-12)))  # Box-Muller
  angle = 2 * np.pi * jitter_angle
  return outline + np.stack([spread * np.cos(angle), spread * np.sin(angle)], axis=1)
