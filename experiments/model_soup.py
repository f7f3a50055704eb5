"""Model soups (Wortsman et al. 2022) in miniature: fine-tunes of one pretrained ViT, averaged.

Fine-tunes N copies of one pretrained model (`--init_checkpoint`, one of our workdirs or an .npz) over a
grid of learning rates x seeds x training augmentations with `configs/CONFIG.py:ARG` (default: the
MNIST-5k SGD fine-tuning recipe), each on `--train_split` in its own workdir; or takes finished
workdirs (`--workdirs`). Then it scores every ingredient on the held-out split (`--held_out_split`, cut
from the training set, never trained on) and on the config's test split, and builds
  uniform_soup     the average of all ingredients;
  greedy_soup      ingredients by held-out accuracy, best first, each kept only if the held-out
                   accuracy of the soup does not drop (vit_jax/soup.py);
  best_ingredient  the ingredient with the best held-out accuracy.
Writes model_soup.csv: name, kind (ingredient | best_ingredient | uniform_soup | greedy_soup), accuracy
(test), held_out_accuracy. Finished runs are not trained again; --print_only prints the launch command
of each unfinished one instead of training.

The study: 6 fine-tunes (SGD, lr 0.03 / 0.1 x seeds 0 / 1 / 2, 500 steps) on MNIST-5k at 32 px of the
fractal-pretrained vit_small of experiments/pretraining_scaling.py (100 categories, unlimited
instances, 500 steps; the first command trains it alone, with the study's own settings, so that
the study reuses it), about 15 minutes on 2 quiet CPU cores:
  python -m vit_jax.main --config=configs/pretrain/fractal_cpu.py:vit_small,fractal \
      --workdir=runs/pretraining_scaling/pretrain/vit_small-unlimited \
      --config.dataset.instances_per_category=0 --config.dataset.num_categories=100 \
      --config.total_steps=500
  python experiments/model_soup.py \
      --init_checkpoint=runs/pretraining_scaling/pretrain/vit_small-unlimited \
      --workdir_root=runs/model_soup --output_dir=experiments/results --override dataset.image_size=32
"""

import argparse
import csv
import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import scoring  # pylint: disable=g-import-not-at-top,wrong-import-position

COLUMNS = ("name", "kind", "accuracy", "held_out_accuracy")


def study_runs(config: str, arg: str, init_checkpoint: str, learning_rates: list[float],
               seeds: list[int], augments: list[str], train_split: str, workdir_root: str,
               overrides: tuple = ()) -> list[runs.Run]:
  """One fine-tuning run per (learning rate, seed, augmentation)."""
  return [runs.Run(config, arg, f"{workdir_root}/lr{lr:g}-seed{seed}-{augment}",
                   (("init_checkpoint", init_checkpoint), ("optimizer.learning_rate", lr),
                    ("seed", seed), ("dataset.train_augment", augment),
                    ("dataset.train_split", train_split)) + tuple(overrides))
          for lr in learning_rates for seed in seeds for augment in augments]


def build_soups(config: Any, ingredients: dict[str, Any], held_out_split: str) -> list[dict]:
  """Rows of model_soup.csv for `ingredients` (name -> params) of one model and data set."""
  from vit_jax import soup  # pylint: disable=g-import-not-at-top

  held_out = scoring.make_scorer(config, held_out_split)
  test = scoring.make_scorer(config, config.dataset.eval_split)
  names, params = list(ingredients), list(ingredients.values())
  held_out_accuracies = [held_out(p) for p in params]
  rows = [dict(name=n, kind="ingredient", accuracy=test(p), held_out_accuracy=h)
          for n, p, h in zip(names, params, held_out_accuracies)]
  best = max(range(len(rows)), key=lambda i: held_out_accuracies[i])
  rows.append(dict(rows[best], kind="best_ingredient"))
  uniform = soup.uniform_soup(params)
  rows.append(dict(name=f"uniform_soup of {len(params)}", kind="uniform_soup", accuracy=test(uniform),
                   held_out_accuracy=held_out(uniform)))
  greedy, kept, greedy_held_out = soup.greedy_soup(params, held_out_accuracies, held_out)
  rows.append(dict(name="greedy_soup of " + " + ".join(names[i] for i in kept), kind="greedy_soup",
                   accuracy=test(greedy), held_out_accuracy=greedy_held_out))
  return rows


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({**row, "accuracy": f"{row['accuracy']:.4f}",
                      "held_out_accuracy": f"{row['held_out_accuracy']:.4f}"} for row in rows)


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="mnist5k", help="Fine-tuning config under configs/.")
  parser.add_argument("--arg", default="vit_small,finetune", help="Its config arg.")
  parser.add_argument("--init_checkpoint", default="", help="The pretrained model every ingredient "
                      "starts from (a workdir or .npz).")
  parser.add_argument("--workdirs", nargs="*", default=[],
                      help="Finished fine-tuning workdirs to soup, instead of training a grid.")
  parser.add_argument("--learning_rates", type=float, nargs="+", default=[0.03, 0.1])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--augments", nargs="+", default=["central_crop"],
                      help="config.dataset.train_augment values (preprocess.TRAIN_AUGMENTS).")
  parser.add_argument("--train_split", default="train[:3500]")
  parser.add_argument("--held_out_split", default="train[3500:]",
                      help="Scores the ingredients and the greedy soup's choices; keep it out of "
                      "--train_split.")
  runs.add_study_flags(parser, "runs/model_soup")
  args = parser.parse_args(argv)
  if bool(args.workdirs) == bool(args.init_checkpoint):
    parser.error("pass either --init_checkpoint (to fine-tune a grid) or --workdirs (finished runs)")

  from vit_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  runs.log_progress()
  if args.workdirs:
    workdirs = args.workdirs
    config = workdir_lib.read_config(workdirs[0])
  else:
    study = study_runs(args.config, args.arg, args.init_checkpoint, args.learning_rates, args.seeds,
                       args.augments, args.train_split, args.workdir_root,
                       runs.parse_overrides(args.override))
    runs.execute(study, print_only=args.print_only)
    if any(run.results() is None for run in study):
      return []
    workdirs, config = [run.workdir for run in study], study[0].config()
  ingredients = {pathlib.Path(w).name: workdir_lib.load_params(w)[1] for w in workdirs}
  rows = build_soups(config, ingredients, args.held_out_split)
  output = pathlib.Path(args.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  write_csv(rows, output / "model_soup.csv")
  for row in rows:
    print(f"{row['kind']:16s} {100 * row['accuracy']:6.2f}%  (held out {100 * row['held_out_accuracy']:6.2f}%)"
          f"  {row['name']}", file=sys.stderr)
  return rows


if __name__ == "__main__":
  main()
