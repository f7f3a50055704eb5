"""DeiT in miniature: a ViT student distilled from the ResNet baseline on Fashion-MNIST.

For each training-set size, three runs of configs/fashion_mnist.py on `train[:SIZE]`:
  teacher   MODEL `resnet` (the data-scaling study's convolutional baseline);
  vit       the student architecture without a teacher (class-token classifier);
  distilled the same ViT with DeiT's distillation token, trained with hard distillation from that
            size's teacher (the paper's recipe: alpha 1/2; evaluation averages the two heads).
The paper's claims to test: the distilled ViT beats the plain one, and can match or beat its teacher.
Writes distillation.csv: model, train_images, teacher (empty without one), accuracy. Runs are
resumable; --print_only prints the launch commands (a student's needs its teacher finished).

  python experiments/distillation.py --workdir_root=runs/distillation --output_dir=experiments/results
"""

import argparse
import csv
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_SIZES = (1_000, 60_000)
COLUMNS = ("model", "train_images", "teacher", "accuracy")


def study_runs(student: str, sizes: list[int], workdir_root: str, distillation_type: str,
               overrides: tuple = ()) -> list[tuple[str, str, runs.Run]]:
  """(model label, teacher label, run) per run, each size's teacher before its students."""
  study = []
  for size in sizes:
    split = (("dataset.train_split", f"train[:{size}]"),)
    teacher = runs.Run("fashion_mnist", "resnet", f"{workdir_root}/resnet-{size}", split + tuple(overrides))
    token = (("model.classifier", "token"),)
    plain = runs.Run("fashion_mnist", student, f"{workdir_root}/{student}-{size}",
                     split + token + tuple(overrides))
    distilled = runs.Run(
        "fashion_mnist", student, f"{workdir_root}/{student}_distilled-{size}",
        split + token + (("model.distilled", True), ("distillation.type", distillation_type),
                         ("distillation.teacher", teacher.workdir)) + tuple(overrides))
    study += [("resnet", "", teacher), (student, "", plain), (f"{student}_distilled", "resnet", distilled)]
  return study


def collect(study: list[tuple[str, str, runs.Run]]) -> list[dict]:
  rows = []
  for model, teacher, run in study:
    results = run.results()
    if results is not None:
      split = dict(run.overrides)["dataset.train_split"]
      rows.append(dict(model=model, train_images=int(split.removeprefix("train[:").rstrip("]")),
                       teacher=teacher, accuracy=round(results["accuracy"], 4)))
  return rows


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--student", default="vit_small", help="vit_tiny or vit_small.")
  parser.add_argument("--train_sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
  parser.add_argument("--distillation_type", default="hard", choices=("hard", "soft"))
  runs.add_study_flags(parser, "runs/distillation")
  args = parser.parse_args(argv)

  runs.log_progress()
  study = study_runs(args.student, args.train_sizes, args.workdir_root, args.distillation_type,
                     runs.parse_overrides(args.override))
  runs.execute([run for _, _, run in study], print_only=args.print_only)
  rows = collect(study)
  if rows:
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with (output / "distillation.csv").open("w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
    print(f"{len(rows)} of {len(study)} runs finished; wrote {output}/distillation.csv", file=sys.stderr)
  return rows


if __name__ == "__main__":
  main()
