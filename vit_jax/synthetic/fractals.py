"""Fractals as in FractalDB (Kataoka et al., ACCV 2020 / IJCV 2022): one category, one IFS.

A category is an iterated function system of 2-8 affine maps x -> [[a, b], [c, d]] x + [e, f], all six
parameters uniform in [-1, 1], each map chosen with probability |ad - bc| (normalised), drawn again
until its attractor is not degenerate: FractalDB keeps a system whose rendering lights at least
`MIN_FILLING_RATE` of the pixels (its search script: 100k points in 512x512, rate 0.2; we render
`SEARCH_POINTS` points in a `SEARCH_SIZE` grid, the same points per pixel). Category c's system is a
pure function of (data seed, c); the search runs over all categories at once.

An instance multiplies one of the six parameter kinds of every map by a weight in [0.8, 1.2]
(FractalDB's intra-category weighting, drawn continuously instead of from {0.8, 0.9, 1.0, 1.1, 1.2})
and plays the chaos game; `raster.draw` places and colours it. All numpy, vectorised over a batch.
"""

import numpy as np

MIN_MAPS, MAX_MAPS = 2, 8
MIN_FILLING_RATE = 0.2
SEARCH_SIZE = 64
SEARCH_POINTS = round(100_000 / 512**2 * SEARCH_SIZE**2)  # FractalDB's points per pixel
MIN_WEIGHT, MAX_WEIGHT = 0.8, 1.2
BURN_IN = 10  # chaos-game steps before points are kept: the random start is forgotten by then
KEPT_STEPS = 32  # steps whose points are kept; the number of parallel chains follows
POINTS_PER_PIXEL = 2.0  # points drawn per image pixel (at 32 px: 2,048 points)
_MAX_ATTEMPTS = 1000


def map_probabilities(maps: np.ndarray) -> np.ndarray:
  """FractalDB's choice probabilities: |det| of each map's linear part, normalised."""
  det = np.abs(maps[..., 0] * maps[..., 3] - maps[..., 1] * maps[..., 2])
  return det / np.maximum(det.sum(axis=-1, keepdims=True), 1e-12)


def chaos_game(maps: np.ndarray, rngs: list[np.random.Generator], num_points: int) -> np.ndarray:
  """float32 [B, 2, num_points] (x and y): points on the attractors of B systems `maps` [B, MAX_MAPS, 6]
  (unused maps all zero), each image's random numbers from its own generator in `rngs`."""
  batch, num_maps = maps.shape[:2]
  chains = -(-num_points // KEPT_STEPS)
  steps = BURN_IN + KEPT_STEPS
  draws = np.stack([rng.random((steps + 2) * chains, np.float32) for rng in rngs])
  choices, starts = draws[:, :steps * chains], draws[:, steps * chains:]
  cumulative = np.cumsum(map_probabilities(maps), axis=1, dtype=np.float32)
  choices = choices * cumulative[:, -1:]
  chosen = np.zeros(choices.shape, np.int64) + np.arange(batch)[:, None] * num_maps  # of all B x N
  for j in range(num_maps - 1):
    chosen += choices > cumulative[:, j:j + 1]
  chosen = chosen.reshape(batch, steps, chains)
  a, b, c, d, e, f = (column[chosen] for column in maps.reshape(-1, 6).T.astype(np.float32))
  x, y = (2 * starts.reshape(batch, 2, chains) - 1).transpose(1, 0, 2)
  kept = []
  with np.errstate(over="ignore", invalid="ignore"):
    for step in range(steps):
      x, y = (a[:, step] * x + b[:, step] * y + e[:, step],
              c[:, step] * x + d[:, step] * y + f[:, step])
      if step >= BURN_IN:
        kept.append(np.stack([x, y], axis=1))
  return np.concatenate(kept, axis=2)[..., :num_points]


def filling_rate(points: np.ndarray, size: int = SEARCH_SIZE) -> np.ndarray:
  """Fraction of a size x size grid lit by each cloud [B, 2, P] fitted to it (0 if not finite)."""
  finite = np.isfinite(points).all(axis=(1, 2))
  points = np.where(finite[:, None, None], points, 0.0)
  low, high = points.min(axis=2, keepdims=True), points.max(axis=2, keepdims=True)
  pixels = np.clip((points - low) / np.maximum(high - low, 1e-12) * size, 0, size - 1).astype(int)
  flat = pixels[:, 1] * size + pixels[:, 0] + np.arange(len(points))[:, None] * size**2
  lit = np.bincount(flat.ravel(), minlength=len(points) * size**2).reshape(len(points), -1) > 0
  return np.where(finite, lit.mean(axis=1), 0.0)


def categories(data_seed: int, num_categories: int) -> np.ndarray:
  """float32 [num_categories, MAX_MAPS, 6]: each category's IFS (rows of zeros: no map)."""
  found = np.zeros((num_categories, MAX_MAPS, 6), np.float32)
  todo = np.arange(num_categories)
  for attempt in range(_MAX_ATTEMPTS):
    rngs = [np.random.default_rng([data_seed, category, attempt]) for category in todo]
    maps = np.zeros((len(todo), MAX_MAPS, 6), np.float32)
    for row, rng in enumerate(rngs):
      count = rng.integers(MIN_MAPS, MAX_MAPS + 1)
      maps[row, :count] = rng.uniform(-1, 1, (count, 6))
    good = filling_rate(chaos_game(maps, rngs, SEARCH_POINTS)) >= MIN_FILLING_RATE
    found[todo[good]] = maps[good]
    todo = todo[~good]
    if not len(todo):
      return found
  raise RuntimeError(f"No IFS of filling rate >= {MIN_FILLING_RATE} in {_MAX_ATTEMPTS} attempts "
                     f"for categories {todo[:10]} (data seed {data_seed}).")


def points(table_rows: np.ndarray, rngs: list[np.random.Generator], num_points: int) -> np.ndarray:
  """float32 [B, 2, num_points]: one instance of each category's IFS `table_rows` [B, MAX_MAPS, 6]."""
  weighting = np.stack([rng.random(2) for rng in rngs])  # which parameter kind, and its weight
  kind = np.minimum((weighting[:, 0] * 6).astype(int), 5)
  weight = MIN_WEIGHT + (MAX_WEIGHT - MIN_WEIGHT) * weighting[:, 1]
  factors = np.where(np.arange(6) == kind[:, None], weight[:, None], 1.0)
  return chaos_game(table_rows * factors[:, None, :].astype(np.float32), rngs, num_points)
