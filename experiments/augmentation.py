"""RandAugment, CutMix and EMA on the data-scaling study's ViTs, at its smallest and largest sizes.

AugReg's and DeiT's regularisers in miniature: do they make ViTs need less data? Each (model, size,
seed) is one run of configs/fashion_mnist.py (the data-scaling recipe: 600 steps of 128, no crops,
label smoothing 0.1) on `train[:SIZE]`, in one of three variants:
  baseline     the recipe as it is, with an EMA of the params (decay 0.99, timm's warm-up power 2/3)
               evaluated beside the raw params: the EMA changes no gradient, so the row `ema` comes
               from the baseline's own runs;
  randaugment  + RandAugment(2, 10), AugReg's medium level, translate and cutout scaled to the 32-px
               image (`randaugment_reference_size=224`; big_vision's pixels would empty the frame);
  cutmix       + CutMix with alpha 1 (DeiT's).
Few-shot probes are off (this study reads the test accuracy only). Writes augmentation.csv (model,
train_images, variant in baseline | ema | randaugment | cutmix, seed, accuracy) and augmentation.md
(mean ± std over seeds, the README's table). Resumable; --print_only prints the launch commands.
The defaults, 2 models x 2 sizes x 3 variants x 2 seeds = 24 runs, take about 35 minutes on 2 quiet
CPU cores (vit_tiny ~40 s, vit_small ~130 s a run):
  python experiments/augmentation.py --workdir_root=runs/augmentation --output_dir=experiments/results
"""

import argparse
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import design  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_MODELS = ("vit_tiny", "vit_small")
DEFAULT_SIZES = (1_000, 60_000)
VARIANTS = {
    "baseline": (("ema.decay", 0.99), ("ema.warmup_power", 2 / 3)),
    "randaugment": (("dataset.randaugment_layers", 2), ("dataset.randaugment_magnitude", 10.0),
                    ("dataset.randaugment_reference_size", 224)),
    "cutmix": (("dataset.cutmix_alpha", 1.0),),
}
COMMON = (("fewshot.shots", ()),)


def study_runs(models: list[str], sizes: list[int], seeds: list[int], workdir_root: str,
               overrides: tuple = ()) -> dict[tuple[str, int, str, int], runs.Run]:
  """(variant, seed, model, size) -> its run of the data-scaling recipe on `train[:size]`."""
  return {(variant, seed, model, size): runs.Run(
      "fashion_mnist", model, f"{workdir_root}/{variant}-seed{seed}/{model}-{size}",
      (("dataset.train_split", f"train[:{size}]"),) + COMMON + extra + (("seed", seed),)
      + tuple(overrides))
          for seed in seeds for variant, extra in VARIANTS.items()
          for model in models for size in sizes}


def collect(study: dict[tuple[str, int, str, int], runs.Run]) -> list[dict]:
  """One row per finished run (and an `ema` row per finished baseline run)."""
  rows = []
  for (variant, seed, model, size), run in study.items():
    results = run.results()
    if results is None:
      continue
    base = dict(model=model, train_images=size, seed=seed)
    rows.append(dict(base, variant=variant, accuracy=round(results["accuracy"], 4)))
    if variant == "baseline":
      rows.append(dict(base, variant="ema", accuracy=round(results["ema_accuracy"], 4)))
  return rows


def markdown(rows: list[dict]) -> str:
  variants = ["baseline", "ema", "randaugment", "cutmix"]
  lines = ["| model | train images | " + " | ".join(variants) + " |",
           "|---|---|" + "---|" * len(variants)]
  points = dict.fromkeys((r["model"], r["train_images"]) for r in rows)
  for model, size in points:
    cells = []
    for variant in variants:
      values = [100 * r["accuracy"] for r in rows
                if (r["model"], r["train_images"], r["variant"]) == (model, size, variant)]
      spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
      cells.append(f"{statistics.mean(values):.1f}{spread}% (n={len(values)})" if values else "")
    lines.append(f"| {model} | {size:,} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
  parser.add_argument("--train_sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  runs.add_study_flags(parser, "runs/augmentation")
  args = parser.parse_args(argv)

  runs.log_progress()
  study = study_runs(args.models, args.train_sizes, args.seeds, args.workdir_root,
                     runs.parse_overrides(args.override))
  runs.execute(study.values(), print_only=args.print_only)
  rows = collect(study)
  if rows:
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    design.write_csv(rows, output / "augmentation.csv")
    (output / "augmentation.md").write_text(markdown(rows))
    print((output / "augmentation.md").read_text())
  return rows


if __name__ == "__main__":
  main()
