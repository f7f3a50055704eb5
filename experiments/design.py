"""The study design the studies share: choices on a validation split, seeds on the test split.

A learning rate (or a checkpoint) chosen by its test accuracy flatters the result it is reported
with; so every choice reads a validation split cut from the end of the training split, and only the
chosen runs are read on the test split, over several seeds (mean and sample std in the CSV, error bars
in the plots).
"""

import csv
import dataclasses
import pathlib
import statistics


@dataclasses.dataclass(frozen=True)
class Target:
  """A real data set to train on: its validation split is cut from the end of its train split."""
  source: str
  full_train: str  # the training split at full size (all but the validation examples)
  validation: str

  def train_split(self, size: str) -> str:
    return self.full_train if size == "full" else f"train[:{int(size)}]"

  def num_train(self, size: str) -> int:
    return int(self.full_train.removeprefix("train[:").rstrip("]")) if size == "full" else int(size)


TARGETS = {
    "digits": Target("digits", "train[:1200]", "train[1200:]"),  # 1,497 train images in all
    "mnist5k": Target("mnist5k", "train[:3500]", "train[3500:]"),  # 4,000
    "fashion_mnist": Target("fashion_mnist", "train[:58000]", "train[58000:]"),  # 60,000
}


def best_learning_rate(validation_accuracy: dict[float, float | None]) -> float | None:
  """The rate of highest validation accuracy (the first on a tie), or None while one is unknown."""
  if any(accuracy is None for accuracy in validation_accuracy.values()):
    return None
  return max(validation_accuracy, key=validation_accuracy.__getitem__)


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
  """One column per key any row has, in order of first appearance."""
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def errorbar(ax, xs: list[float], rows: list[dict], key: str, **style) -> None:
  """`rows[i][key]` at `xs[i]` in percent, with error bars of `rows[i][key + '_std']` (none for rows
  without a spread, such as one-seed CSVs of earlier designs)."""
  ax.errorbar(xs, [100 * r[key] for r in rows], yerr=[100 * (r.get(f"{key}_std") or 0.) for r in rows],
              capsize=3, **style)
