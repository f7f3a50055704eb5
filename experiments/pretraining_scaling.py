"""Pretraining-set-size scaling on formula-driven data: does more synthetic pretraining data help?

The paper's Figures 3 and 4 in miniature, with synthetic pretraining (vit_jax/synthetic) so the
pretraining set can grow past any real data set that installs offline:
  pretrain  configs/pretrain/fractal_cpu.py:MODEL on 100 fractal categories x N/100 instances (N in
            --pretrain_sizes; 0: unlimited, never an image twice), the same steps for every N.
  finetune  each pretrained model on each real target (digits, MNIST-5k, Fashion-MNIST; 1,000 training
            images, or the full training split) with configs/fashion_mnist.py's recipe (AdamW, label
            smoothing 0.1, 32 px, no crops) from a new zero head, for the same number of epochs
            (--finetune_epochs) whatever the training-set size.
  scratch   the same model and recipe from a random initialisation: the same target budget.
Study design: the learning rate of each (model, initialisation, target) is chosen from
--learning_rates on a validation split cut from the target's training split (never the test split),
by one run each (the pretrained arm sweeps from the largest pretraining set and uses the rate for
all sizes); then every point is trained with --seeds seeds and tested on the test split (mean and
spread in the CSV, error bars in the plot). Both arms share resolution, recipe and regularisation.
The 10-shot linear probe (ridge regression on frozen features, 5 draws of the shots) is taken of each
pretrained model, and of each scratch run's own random initialisation.

Writes pretraining_scaling.csv (one row per model, pretrain_images, target-size: accuracy,
scratch_accuracy, fewshot_10shot as fractions, means over seeds, with _std columns;
pretrain_images 0 = unlimited) and pretraining_scaling.png. Resumable (finished runs are kept);
--print_only prints the launch command of each run that can start now (sweeps need their pretraining,
final runs their sweep); --collect_only writes the outputs of the points already finished. The
defaults take 86 minutes on 2 quiet CPU cores, one process from an empty workdir_root (measured
2026-12-02): 12 pretraining runs of 1,000 steps (39 min: vit_tiny ~2 min, vit_small ~3.5 min, ResNet
~4.5 min each), 36 sweep + 135 final fine-tuning runs of 39 steps (45 min: 11-19 s each with
compiling, validation and testing), the probes (~2 min). The sizes stop at 100k: 1,000 steps
draw 128k images, so a 1M-image set would never repeat one, the same as unlimited. Pretraining length
is the lever that decides transfer at this scale (a pilot, vit_tiny on MNIST-5k at 1,000 images,
validation split: pretrained 43.8% vs scratch 41.2% after 500 pretraining steps, 78.6% after 2,000):
  python experiments/pretraining_scaling.py --workdir_root=runs/pretraining_scaling \
      --output_dir=experiments/results
"""

import argparse
import dataclasses
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import design  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_MODELS = ("vit_tiny", "vit_small", "resnet")
DEFAULT_PRETRAIN_SIZES = (1_000, 10_000, 100_000, 0)
DEFAULT_TARGET_SIZES = ("1000",)
DEFAULT_LEARNING_RATES = (1e-3, 3e-3)
PRETRAIN_CATEGORIES = 100
PRETRAIN_STEPS = 1_000
FINETUNE_EPOCHS = 5
FEWSHOT_SHOTS = 10
TARGET_BATCH_SIZE = 128  # configs/fashion_mnist.py's: fine-tuning steps = epochs x images / this
SCRATCH = "scratch"


def size_name(pretrain_images: int) -> str:
  return str(pretrain_images) if pretrain_images else "unlimited"


@dataclasses.dataclass(frozen=True)
class Study:
  models: tuple[str, ...]
  pretrain_sizes: tuple[int, ...]
  targets: tuple[str, ...]
  target_sizes: tuple[str, ...]
  learning_rates: tuple[float, ...]
  seeds: tuple[int, ...]
  workdir_root: str
  family: str = "fractal"
  pretrain_steps: int = PRETRAIN_STEPS
  finetune_epochs: int = FINETUNE_EPOCHS
  pretrain_overrides: tuple = ()
  target_overrides: tuple = ()

  def pretrain(self, model: str, pretrain_images: int) -> runs.Run:
    overrides = (("dataset.instances_per_category", pretrain_images // PRETRAIN_CATEGORIES),
                 ("dataset.num_categories", PRETRAIN_CATEGORIES),
                 ("total_steps", self.pretrain_steps),
                 runs.shared_compilation_cache(self.workdir_root))
    return runs.Run("pretrain.fractal_cpu", f"{model},{self.family}",
                    f"{self.workdir_root}/pretrain/{model}-{size_name(pretrain_images)}",
                    overrides + tuple(self.pretrain_overrides))

  def largest_pretraining(self) -> int:
    return 0 if 0 in self.pretrain_sizes else max(self.pretrain_sizes)

  def finetune(self, model: str, init: str, target: str, size: str, *, learning_rate: float,
               seed: int, validation: bool) -> runs.Run:
    """`init`: SCRATCH or a pretraining size name; on the validation split (sweep) or the test split."""
    spec = design.TARGETS[target]
    steps = max(1, round(self.finetune_epochs * spec.num_train(size) / TARGET_BATCH_SIZE))
    overrides = [("dataset.source", spec.source), ("dataset.train_split", spec.train_split(size)),
                 ("dataset.eval_split", spec.validation if validation else "test"),
                 ("batch_size", TARGET_BATCH_SIZE), ("total_steps", steps),
                 ("checkpoint_every", steps), ("fewshot.shots", ()),
                 ("optimizer.learning_rate", learning_rate),
                 ("optimizer.warmup_steps", max(1, steps // 10)), ("seed", seed),
                 runs.shared_compilation_cache(self.workdir_root)]
    if init != SCRATCH:
      pretrain_images = 0 if init == "unlimited" else int(init)
      overrides.append(("init_checkpoint", self.pretrain(model, pretrain_images).workdir))
    kind = f"sweep-lr{learning_rate:g}" if validation else f"seed{seed}"
    return runs.Run("fashion_mnist", model,
                    f"{self.workdir_root}/{target}-{size}/{model}-{init}-{kind}",
                    tuple(overrides) + tuple(self.target_overrides))

  def inits(self) -> list[str]:
    return [SCRATCH] + [size_name(n) for n in self.pretrain_sizes]

  def sweep_init(self, init: str) -> str:
    return SCRATCH if init == SCRATCH else size_name(self.largest_pretraining())

  def sweep(self, model: str, init: str, target: str, size: str) -> list[runs.Run]:
    return [self.finetune(model, self.sweep_init(init), target, size, learning_rate=lr,
                          seed=self.seeds[0], validation=True) for lr in self.learning_rates]

  def best_learning_rate(self, model: str, init: str, target: str, size: str) -> float | None:
    """The sweep's rate of highest validation accuracy, or None while a sweep run is unfinished."""
    results = [run.results() for run in self.sweep(model, init, target, size)]
    return design.best_learning_rate({lr: None if r is None else r["accuracy"]
                                      for lr, r in zip(self.learning_rates, results)})

  def final(self, model: str, init: str, target: str, size: str) -> list[runs.Run] | None:
    learning_rate = self.best_learning_rate(model, init, target, size)
    if learning_rate is None:
      return None
    return [self.finetune(model, init, target, size, learning_rate=learning_rate, seed=seed,
                          validation=False) for seed in self.seeds]

  def points(self):
    return [(model, target, size) for model in self.models for target in self.targets
            for size in self.target_sizes]


def run_stages(study: Study, print_only: bool) -> None:
  """Pretraining, then the learning-rate sweeps, then the final runs: each stage needs the last."""
  runs.execute([study.pretrain(m, n) for m in study.models for n in study.pretrain_sizes],
               print_only=print_only)
  sweeps = {run.workdir: run for model, target, size in study.points()
            for init in (SCRATCH, size_name(study.largest_pretraining()))
            for run in study.sweep(model, init, target, size)}
  runs.execute([run for run in sweeps.values() if _can_start(run)], print_only=print_only)
  finals = [study.final(model, init, target, size) for model, target, size in study.points()
            for init in study.inits()]
  runs.execute([run for group in finals if group for run in group if _can_start(run)],
               print_only=print_only)


def _can_start(run: runs.Run) -> bool:
  """Whether the run's pretraining (if it has one) is finished."""
  init = dict(run.overrides).get("init_checkpoint")
  return not init or workdir_lib.read_results(init) is not None


def fewshot_probe(study: Study, model: str, init: str, target: str, seed: int) -> float:
  """10-shot accuracy on `target`'s test split of a pretrained model's features, or (SCRATCH) of
  the random initialisation of the scratch run of `seed`."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from vit_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding  # pylint: disable=g-import-not-at-top
  from vit_jax import steps  # pylint: disable=g-import-not-at-top
  from vit_jax.evaluators import fewshot  # pylint: disable=g-import-not-at-top

  scratch = study.finetune(model, SCRATCH, target, study.target_sizes[0], learning_rate=0.0,
                           seed=seed, validation=False).config()
  data = ml_collections.ConfigDict(scratch.dataset.to_dict())
  data.update(train_split=design.TARGETS[target].train_split(study.target_sizes[0]), eval_split="test")
  settings = dict(shots=(FEWSHOT_SHOTS,), seeds=5, batch_size=512)  # big_vision's protocol
  key = f"fewshot_{FEWSHOT_SHOTS}shot"
  if init != SCRATCH:
    pretrain_images = 0 if init == "unlimited" else int(init)
    return fewshot.evaluate_checkpoint(study.pretrain(model, pretrain_images).workdir, data,
                                       **settings)[key]
  network = models_lib.create(scratch.model, num_classes=scratch.dataset.num_classes)
  params = steps.init_train_state(scratch, network, optax.identity(), jax.random.key(seed)).params
  mesh = sharding.create_mesh(ml_collections.ConfigDict(dict(data=-1, model=1)))
  return fewshot.Evaluator(scratch.model, data, mesh, **settings)(params)[key]


def collect(study: Study) -> list[dict]:
  """One row per (model, pretrain_images, target at a size) whose runs are all finished."""
  rows = []
  for model, target, size in study.points():
    scratch_runs = study.final(model, SCRATCH, target, size)
    scratch = [r.results() for r in scratch_runs or []]
    if not scratch or any(r is None for r in scratch):
      continue
    scratch_accuracy = design.mean_std([r["accuracy"] for r in scratch])
    scratch_probe = design.mean_std([fewshot_probe(study, model, SCRATCH, target, s) for s in study.seeds])
    for pretrain_images in study.pretrain_sizes:
      init = size_name(pretrain_images)
      finals = [r.results() for r in study.final(model, init, target, size) or []]
      if not finals or any(r is None for r in finals):
        continue
      accuracy = design.mean_std([r["accuracy"] for r in finals])
      probe = fewshot_probe(study, model, init, target, study.seeds[0])
      rows.append(dict(
          model=model, pretrain_images=pretrain_images,
          target=f"{target}-{size}",
          accuracy=round(accuracy[0], 4), scratch_accuracy=round(scratch_accuracy[0], 4),
          fewshot_10shot=round(probe, 4), accuracy_std=round(accuracy[1], 4),
          scratch_accuracy_std=round(scratch_accuracy[1], 4),
          scratch_fewshot_10shot=round(scratch_probe[0], 4),
          scratch_fewshot_10shot_std=round(scratch_probe[1], 4), seeds=len(finals),
          learning_rate=study.best_learning_rate(model, init, target, size),
          scratch_learning_rate=study.best_learning_rate(model, SCRATCH, target, size)))
  return rows


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
  """Fine-tuned accuracy vs pretraining images (unlimited at the right), one panel per target."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  targets = list(dict.fromkeys(row["target"] for row in rows))
  fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets) + 2, 4), squeeze=False)
  finite = [r["pretrain_images"] for r in rows if r["pretrain_images"]] or [1]
  unlimited_x = 10 * max(finite)
  for ax, target in zip(axes[0], targets):
    for i, model in enumerate(dict.fromkeys(row["model"] for row in rows)):
      points = sorted((r["pretrain_images"] or unlimited_x, r) for r in rows
                      if r["model"] == model and r["target"] == target)
      if not points:
        continue
      xs = [x for x, _ in points]
      design.errorbar(ax, xs, [r for _, r in points], "accuracy", fmt="o-", color=f"C{i}",
                      label=f"{model}: fine-tuned")
      scratch = points[0][1]
      ax.axhline(100 * scratch["scratch_accuracy"], color=f"C{i}", linestyle=":",
                 label=f"{model}: from scratch (mean; band ± std)")
      ax.axhspan(100 * (scratch["scratch_accuracy"] - scratch["scratch_accuracy_std"]),
                 100 * (scratch["scratch_accuracy"] + scratch["scratch_accuracy_std"]),
                 color=f"C{i}", alpha=0.15)
      ax.plot(xs, [100 * r["fewshot_10shot"] for _, r in points], "s--", color=f"C{i}",
              alpha=0.6, label=f"{model}: 10-shot probe")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(finite)) + [unlimited_x],
                  [f"{n:,}" for n in sorted(set(finite))] + ["unlimited"], fontsize=7)
    ax.set_xlabel("pretraining images (synthetic)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(target)
    ax.grid(True, which="both", alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser, *, models, pretrain_sizes, target_sizes,
                  workdir_root: str) -> None:
  """The flags shared with experiments/transfer_study.py."""
  parser.add_argument("--models", nargs="+", default=list(models))
  parser.add_argument("--pretrain_sizes", type=int, nargs="+", default=list(pretrain_sizes),
                      help="Pretraining images (100 categories x N/100 instances); 0: unlimited.")
  parser.add_argument("--family", default="fractal", choices=("fractal", "contours"))
  parser.add_argument("--targets", nargs="+", default=list(design.TARGETS), choices=list(design.TARGETS))
  parser.add_argument("--target_sizes", nargs="+", default=list(target_sizes),
                      help="Target training images: counts, or 'full'.")
  parser.add_argument("--learning_rates", type=float, nargs="+",
                      default=list(DEFAULT_LEARNING_RATES))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--pretrain_steps", type=int, default=PRETRAIN_STEPS)
  parser.add_argument("--finetune_epochs", type=float, default=FINETUNE_EPOCHS)
  parser.add_argument("--pretrain_override", nargs="*", default=[], metavar="KEY=VALUE")
  parser.add_argument("--target_override", nargs="*", default=[], metavar="KEY=VALUE")
  parser.add_argument("--collect_only", action="store_true",
                      help="Train nothing: write the CSV from the points whose runs are all finished "
                           "(e.g. after a cluster ran the --print_only commands).")
  runs.add_study_flags(parser, workdir_root, override=False)


def study_from_args(args: argparse.Namespace) -> Study:
  return Study(models=tuple(args.models), pretrain_sizes=tuple(args.pretrain_sizes),
               targets=tuple(args.targets), target_sizes=tuple(args.target_sizes),
               learning_rates=tuple(args.learning_rates), seeds=tuple(range(args.seeds)),
               workdir_root=args.workdir_root, family=args.family,
               pretrain_steps=args.pretrain_steps, finetune_epochs=args.finetune_epochs,
               pretrain_overrides=runs.parse_overrides(args.pretrain_override),
               target_overrides=runs.parse_overrides(args.target_override))


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser, models=DEFAULT_MODELS, pretrain_sizes=DEFAULT_PRETRAIN_SIZES,
                target_sizes=DEFAULT_TARGET_SIZES, workdir_root="runs/pretraining_scaling")
  args = parser.parse_args(argv)
  runs.log_progress()
  study = study_from_args(args)
  if not args.collect_only:
    run_stages(study, args.print_only)
  if args.print_only:
    return []
  rows = collect(study)
  if rows:
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    design.write_csv(rows, output / "pretraining_scaling.csv")
    plot(rows, output / "pretraining_scaling.png",
         f"Fine-tuning after {study.family} pretraining ({study.pretrain_steps} steps each)")
    print(f"{len(rows)} rows; wrote {output}/pretraining_scaling.csv and .png", file=sys.stderr)
  return rows


if __name__ == "__main__":
  main()
