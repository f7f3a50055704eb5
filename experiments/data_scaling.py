"""Data-scaling study: test accuracy vs number of training images, one line per model.

The paper's Figures 3 and 4 in miniature: ViTs against a ResNet baseline as the training set grows.
Every run is `configs/CONFIG.py:MODEL` trained on `train[:SIZE]` of the target for the same step
budget (600 steps of 128 images), whatever the size; so that size is not confounded with epochs (a
small set is seen many more times, and overfits), the study keeps the run's checkpoint of best accuracy
on a validation split, as the paper's early stopping did. The design (experiments/design.py):
  validation  the end of the target's training split (Fashion-MNIST: train[58000:], 2,000 images),
              never trained on; the runs train on at most the 58,000 images before it.
  checkpoint  a checkpoint every --eval_every steps (all kept); each is scored on the validation split
              and the best one on the test split (best_checkpoint.json in the run's workdir).
  rate        at the smallest and the largest size, one run (seed 0) per rate of --learning_rates; the
              rate of best validation accuracy is used at that size, and at each other size the rate of
              the nearer of the two (log scale). The sweep's best run is seed 0 of its point.
  seeds       each (model, size) point is --seeds runs at its rate (mean and sample std of their test
              accuracies in the CSV, error bars in the plot).
Writes data_scaling.csv, one row per (model, size) with model, train_size, accuracy, accuracy_std (test
accuracy of the best-validation checkpoint, fractions), validation_accuracy, learning_rate, best_step
(median over seeds), the config's few-shot probes of the same checkpoint (fewshot_Kshot and _std), seeds,
steps, train_seconds (mean per run); and data_scaling.png (accuracy vs training images, log x, error bars;
10-shot probe dashed). Finished runs (results.json) are not run again, stopped ones resume, scored
checkpoints are not scored again. --print_only prints the launch command of each run that can start now
(the sweep, then each point's seeds once its sweep is scored: that scoring runs here, on this machine).

The real study, on Fashion-MNIST (Debian package dataset-fashion-mnist): 3 models x 3 sizes (1,000,
7,500, 58,000), 2 rates, 3 seeds: 11 runs per model (4 at each swept size, 3 at 7,500), 33 in all.
Measured: 37 minutes on the 2 quiet CPU cores (2026-12-03; vit_jax.main's CPU defaults, two host
devices and freed memory reused; 81 minutes on one device before), runs training for ~20-30 s
(vit_tiny), ~55-70 s (vit_small) and ~60-80 s (ResNet) plus start, compile and evaluation, and ~10 s
of scoring each. Each further size costs 3 runs per model (~9 minutes), hence the 3 default sizes.
7,500 takes the rate chosen at 1,000 (7,500 < sqrt(1,000 x 58,000) = 7,616).
  python experiments/data_scaling.py --workdir_root=runs/data_scaling --output_dir=experiments/results
One launch command per run that can start (for a cluster), then collect with the first command:
  python experiments/data_scaling.py --workdir_root=runs/data_scaling --print_only
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import design  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import scoring  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_MODELS = ("vit_tiny", "vit_small", "resnet")
DEFAULT_SIZES = (1_000, 7_500, 58_000)
DEFAULT_LEARNING_RATES = (1e-3, 3e-3)
EVAL_EVERY = 100
TEST_SPLIT = "test"
SELECTION_FILE = "best_checkpoint.json"  # in each run's workdir
FEWSHOT_PLOTTED = "fewshot_10shot"


@dataclasses.dataclass(frozen=True)
class Study:
  config: str
  target: str
  models: tuple[str, ...]
  sizes: tuple[int, ...]
  learning_rates: tuple[float, ...]
  seeds: tuple[int, ...]
  workdir_root: str
  eval_every: int = EVAL_EVERY
  overrides: tuple = ()
  _evaluators: dict = dataclasses.field(default_factory=dict, init=False, compare=False, repr=False)

  def __post_init__(self):
    spec = design.TARGETS[self.target]
    largest = spec.num_train("full")
    if max(self.sizes) > largest:
      raise ValueError(f"--train_sizes {max(self.sizes)} is more than the {largest} training images "
                       f"of {self.target} before its validation split {spec.validation}; use at most "
                       f"{largest}.")

  def run(self, model: str, size: int, learning_rate: float, seed: int, *,
          probes: bool = False) -> runs.Run:
    """Trained on `train[:size]`, evaluated on the validation split, every checkpoint kept for scoring.
    The runs share one compilation cache: those of a model and rate compile the same steps. Without
    `probes` the config's few-shot probes are off: they are taken of the best checkpoint (`select`)."""
    spec = design.TARGETS[self.target]
    overrides = (("dataset.source", spec.source), ("dataset.train_split", spec.train_split(str(size))),
                 ("dataset.eval_split", spec.validation), ("optimizer.learning_rate", learning_rate),
                 ("seed", seed), ("checkpoint_every", self.eval_every),
                 ("keep_checkpoint_every", self.eval_every),
                 runs.shared_compilation_cache(self.workdir_root))
    run = runs.Run(self.config, model,
                   f"{self.workdir_root}/{model}-{size}-lr{learning_rate:g}-seed{seed}",
                   overrides + tuple(self.overrides), pins=())
    if probes or not run.config().get("fewshot"):
      return run
    return dataclasses.replace(run, overrides=run.overrides + (("fewshot.shots", ()),))

  def sweep_size(self, size: int) -> int:
    """The swept size whose rate `size` uses: the smallest or the largest, the nearer in log scale."""
    smallest, largest = min(self.sizes), max(self.sizes)
    return smallest if size * size <= smallest * largest else largest

  def sweep(self, model: str, size: int) -> list[runs.Run]:
    return [self.run(model, self.sweep_size(size), rate, self.seeds[0])
            for rate in self.learning_rates]

  def best_learning_rate(self, model: str, size: int) -> float | None:
    """The sweep's rate of best validation accuracy (at its best checkpoint), or None while a sweep
    run is unfinished."""
    selections = [self.select(run) for run in self.sweep(model, size)]
    return design.best_learning_rate({rate: None if s is None else s["validation_accuracy"]
                                      for rate, s in zip(self.learning_rates, selections)})

  def finals(self, model: str, size: int) -> list[runs.Run] | None:
    """The point's runs, one per seed at its chosen rate; None until the rate is chosen."""
    rate = self.best_learning_rate(model, size)
    if rate is None:
      return None
    return [self.run(model, size, rate, seed) for seed in self.seeds]

  def select(self, run: runs.Run) -> dict | None:
    """The run's checkpoint of best validation accuracy (the earliest on a tie) and its test metrics,
    scored once and kept in the workdir's best_checkpoint.json; None while the run is unfinished."""
    path = pathlib.Path(run.workdir) / SELECTION_FILE
    if path.exists():
      return json.loads(path.read_text())
    if run.results() is None:
      return None
    config = run.config()
    every, total = config.checkpoint_every, config.total_steps
    params = {step: workdir_lib.load_params(run.workdir, step=step)[1]
              for step in sorted(set(range(every, total + 1, every)) | {total})}
    score = self.evaluator(run.arg, design.TARGETS[self.target].validation)
    validation = {step: score(p)["accuracy"] for step, p in params.items()}
    best = max(validation, key=validation.__getitem__)
    test = self.evaluator(run.arg, TEST_SPLIT)(params[best])
    selection = dict(best_step=best, validation_accuracy=validation[best], test=test,
                     validation={str(step): accuracy for step, accuracy in validation.items()})
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(selection, indent=2, sort_keys=True))
    partial.replace(path)
    return selection

  def evaluator(self, model: str, split: str) -> Callable[[Any], dict[str, float]]:
    """f(params) -> metrics of `model` on `split` (with the config's few-shot probes on the test split
    only), built once: the runs of a model differ in nothing their evaluation reads."""
    if (model, split) not in self._evaluators:
      config = self.run(model, self.sizes[0], self.learning_rates[0], self.seeds[0],
                        probes=True).config()
      self._evaluators[model, split] = scoring.make_evaluator(config, split,
                                                              probes=split == TEST_SPLIT)
    return self._evaluators[model, split]

  def points(self) -> list[tuple[str, int]]:
    return [(model, size) for model in self.models for size in self.sizes]


def run_stages(study: Study, print_only: bool) -> None:
  """The sweeps, then every point's seeds at the rate its sweep chose."""
  sweeps = {run.workdir: run for model, size in study.points() for run in study.sweep(model, size)}
  runs.execute(sweeps.values(), print_only=print_only)
  finals = [study.finals(model, size) for model, size in study.points()]
  runs.execute([run for group in finals if group for run in group], print_only=print_only)


def collect(study: Study) -> list[dict]:
  """One row per (model, size) whose runs are all finished and scored."""
  rows = []
  for model, size in study.points():
    finals = study.finals(model, size) or []
    selections = [study.select(run) for run in finals]
    if not selections or any(s is None for s in selections):
      continue
    tests = [s["test"] for s in selections]
    accuracy = design.mean_std([t["accuracy"] for t in tests])
    validation = statistics.fmean(s["validation_accuracy"] for s in selections)
    row = dict(model=model, train_size=size, accuracy=round(accuracy[0], 4),
               accuracy_std=round(accuracy[1], 4), validation_accuracy=round(validation, 4),
               learning_rate=study.best_learning_rate(model, size),
               best_step=statistics.median_low(s["best_step"] for s in selections))
    shots = sorted((k for k in tests[0] if k.startswith("fewshot_")),
                   key=lambda k: int(k.removeprefix("fewshot_").removesuffix("shot")))
    for key in shots:
      mean, std = design.mean_std([t[key] for t in tests])
      row.update({key: round(mean, 4), f"{key}_std": round(std, 4)})
    results = [run.results() for run in finals]
    row.update(seeds=len(finals), steps=results[0]["steps"],
               train_seconds=round(statistics.fmean(r["train_seconds"] for r in results), 1))
    rows.append(row)
  return rows


def plot(rows: list[dict], path: pathlib.Path, title: str, fewshot_data: str = "") -> None:
  """Test accuracy (mean ± std over seeds) vs training images, and the 10-shot probe dashed."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(8.4, 4.4))
  for i, model in enumerate(dict.fromkeys(row["model"] for row in rows)):
    points = sorted((r for r in rows if r["model"] == model), key=lambda r: r["train_size"])
    sizes = [r["train_size"] for r in points]
    design.errorbar(ax, sizes, points, "accuracy", fmt="o-", color=f"C{i}", label=model)
    if all(FEWSHOT_PLOTTED in r for r in points):
      design.errorbar(ax, sizes, points, FEWSHOT_PLOTTED, fmt="s--", color=f"C{i}", alpha=0.7,
                      label=f"{model}: 10-shot linear probe {fewshot_data}".rstrip())
  ax.set_xscale("log")
  ax.set_xlabel("training images")
  ax.set_ylabel("test accuracy (%)")
  fig.suptitle(title)  # over the whole figure: over the axes alone, the legend pushes it off the edge
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the lines, not on them
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="fashion_mnist",
                      help="Experiment config under configs/ whose arg names the model.")
  parser.add_argument("--target", default="fashion_mnist", choices=list(design.TARGETS),
                      help="The data set: its source, and its validation split (design.TARGETS).")
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
  parser.add_argument("--train_sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
  parser.add_argument("--learning_rates", type=float, nargs="+", default=list(DEFAULT_LEARNING_RATES))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--eval_every", type=int, default=EVAL_EVERY,
                      help="Steps between the checkpoints scored on the validation split.")
  runs.add_study_flags(parser, "runs/data_scaling")
  args = parser.parse_args(argv)

  runs.log_progress()
  study = Study(config=args.config, target=args.target, models=tuple(args.models),
                sizes=tuple(sorted(set(args.train_sizes))), learning_rates=tuple(args.learning_rates),
                seeds=tuple(range(args.seeds)), workdir_root=args.workdir_root,
                eval_every=args.eval_every, overrides=runs.parse_overrides(args.override))
  run_stages(study, args.print_only)
  if args.print_only:
    return []
  rows = collect(study)
  if rows:
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    design.write_csv(rows, output / "data_scaling.csv")
    config = study.run(study.models[0], study.sizes[0], study.learning_rates[0], study.seeds[0],
                       probes=True).config()
    probes = config.get("fewshot") or {}
    fewshot_source = (probes.get("dataset") or {}).get("source")
    plot(rows, output / "data_scaling.png",
         f"{args.target}: best-validation checkpoint of {config.total_steps} steps, mean ± std of "
         f"{len(study.seeds)} seeds",
         f"on {fewshot_source} ({probes.get('protocol', 'big_vision')} protocol)"
         if fewshot_source else "")
    print(f"{len(rows)} of {len(study.points())} points finished; wrote {output}/data_scaling.csv "
          "and .png", file=sys.stderr)
  return rows


if __name__ == "__main__":
  main()
