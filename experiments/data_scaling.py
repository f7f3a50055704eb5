"""Data-scaling study: test accuracy vs number of training images, one line per model.

The paper's Figures 3 and 4 in miniature: ViTs against a ResNet baseline as the training set grows.
Each (model, size) pair is one run of an experiment config (`configs/CONFIG.py:MODEL`, trained on
`train[:SIZE]`) in its own workdir `WORKDIR_ROOT/MODEL-SIZE`; finished runs (results.json) are not run
again and stopped ones resume. All results then go into `data_scaling.csv` (one row per run: model,
train_size, accuracy as a fraction, few-shot accuracies when the config reports them, steps, seconds)
and `data_scaling.png` (accuracy vs training images, log x; 10-shot MNIST-5k probe accuracy dashed).

The real study, on Fashion-MNIST (Debian package dataset-fashion-mnist): 3 models x 4 sizes, 600 steps
of 128 images each: 22 minutes on 2 quiet CPU cores (runs of 40 s for vit_tiny, 100-140 s for
vit_small and 130-155 s for the ResNet, compiling and evaluation included):
  python experiments/data_scaling.py --workdir_root=runs/data_scaling --output_dir=experiments/results
One launch command per unfinished run instead (for a cluster), then collect with the first command:
  python experiments/data_scaling.py --workdir_root=runs/data_scaling --print_only
"""

import argparse
import csv
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_MODELS = ("vit_tiny", "vit_small", "resnet")
DEFAULT_SIZES = (1_000, 4_000, 15_000, 60_000)
FEWSHOT_PLOTTED = "fewshot_10shot"


def study_runs(config: str, models: list[str], sizes: list[int], workdir_root: str,
               overrides: tuple = ()) -> list[runs.Run]:
  return [runs.Run(config, model, f"{workdir_root}/{model}-{size}",
                   (("dataset.train_split", f"train[:{size}]"),) + tuple(overrides))
          for model in models for size in sizes]


def collect(study: list[runs.Run]) -> list[dict]:
  """One row per finished run, with every accuracy its results.json reports."""
  rows = []
  for run in study:
    results = run.results()
    if results is None:
      continue
    train_split = dict(run.overrides)["dataset.train_split"]
    row = dict(model=run.arg, train_size=int(train_split.removeprefix("train[:").rstrip("]")),
               accuracy=results["accuracy"])
    shots = sorted((k for k in results if k.startswith("fewshot_")),
                   key=lambda k: int(k.removeprefix("fewshot_").removesuffix("shot")))
    row.update({k: results[k] for k in shots})
    row.update(steps=results["steps"], train_seconds=round(results["train_seconds"], 1),
               workdir=run.workdir)
    rows.append(row)
  return rows


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def plot(rows: list[dict], path: pathlib.Path, title: str, fewshot_data: str = "") -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(8.4, 4.4))
  for i, model in enumerate(dict.fromkeys(row["model"] for row in rows)):
    points = sorted((r["train_size"], r["accuracy"], r.get(FEWSHOT_PLOTTED)) for r in rows
                    if r["model"] == model)
    sizes = [p[0] for p in points]
    color = f"C{i}"
    ax.plot(sizes, [100 * p[1] for p in points], "o-", color=color, label=f"{model}")
    if all(p[2] is not None for p in points):
      ax.plot(sizes, [100 * p[2] for p in points], "s--", color=color, alpha=0.7,
              label=f"{model}: 10-shot linear probe {fewshot_data}".rstrip())
  ax.set_xscale("log")
  ax.set_xlabel("training images")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
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
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
  parser.add_argument("--train_sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
  runs.add_study_flags(parser, "runs/data_scaling")
  args = parser.parse_args(argv)

  runs.log_progress()
  study = study_runs(args.config, args.models, args.train_sizes, args.workdir_root,
                     runs.parse_overrides(args.override))
  runs.execute(study, print_only=args.print_only)
  rows = collect(study)
  if rows:
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_csv(rows, output / "data_scaling.csv")
    probes = study[0].config().get("fewshot") or {}
    fewshot_source = (probes.get("dataset") or {}).get("source")
    plot(rows, output / "data_scaling.png", f"{args.config}: accuracy vs training-set size",
         f"on {fewshot_source} ({probes.get('protocol', 'big_vision')} protocol)"
         if fewshot_source else "")
    print(f"{len(rows)} of {len(study)} runs finished; wrote {output}/data_scaling.csv and .png",
          file=sys.stderr)
  return rows


if __name__ == "__main__":
  main()
