"""Transfer study on formula-driven pretraining: pretrain on fractals, fine-tune on real digits and clothes.

  pretrain  configs/pretrain/fractal_cpu.py:MODEL (vit_tiny unless --models): 100 fractal categories,
            unlimited instances, 32 px; no natural image. vit_tiny because its full-size Fashion-MNIST
            arm (10 runs of 2,266 steps) took 26 minutes with its pretraining on 2 quiet cores; vit_small's
            would take about twice as long (its runs train ~2x longer in the data-scaling study).
  finetune  the pretrained model on each real target (digits, MNIST-5k, Fashion-MNIST) at 1,000 training
            images and at the full training split, from a new zero head, with configs/fashion_mnist.py's
            recipe at the same 32 px.
  scratch   the same model and recipe from a random initialisation, the same epochs.
The design of experiments/pretraining_scaling.py (this study is its unlimited-pretraining slice, at
both target sizes): learning rates chosen on a validation split cut from each target's training
split, `--seeds` seeds per point (mean ± std), 10-shot linear probes of the pretrained features and
of each scratch run's own random initialisation. Writes transfer_study.md (the README's table) and
transfer_study.csv. Resumable; --print_only prints the runs that can start now, --collect_only
writes the outputs of the points already finished. With the pretraining-scaling study's
--workdir_root, the runs the two share (pretraining, 1,000 images) are trained once:

  python experiments/transfer_study.py --workdir_root=runs/pretraining_scaling --output_dir=experiments/results
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import design  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import pretraining_scaling  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position


def markdown(rows: list[dict], study: pretraining_scaling.Study) -> str:
  percent = lambda mean, std: f"{100 * mean:.1f} ± {100 * std:.1f}%"
  lines = [
      f"Pretraining: {study.family}, {pretraining_scaling.PRETRAIN_CATEGORIES} categories, unlimited "
      f"instances, {study.pretrain_steps} "
      f"steps of 128 at 32 px. Fine-tuning and scratch: {study.finetune_epochs:g} epochs, "
      f"learning rate from {list(study.learning_rates)} on a validation split, {len(study.seeds)} "
      "seeds (mean ± std), test split.",
      "",
      "| model | target (train images) | pretrained, fine-tuned | from scratch | gain | "
      "10-shot probe: pretrained | 10-shot probe: random init |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['model']} | {r['target']} | {percent(r['accuracy'], r['accuracy_std'])} | "
        f"{percent(r['scratch_accuracy'], r['scratch_accuracy_std'])} | "
        f"{100 * (r['accuracy'] - r['scratch_accuracy']):+.1f} | {100 * r['fewshot_10shot']:.1f}% | "
        f"{percent(r['scratch_fewshot_10shot'], r['scratch_fewshot_10shot_std'])} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  pretraining_scaling.add_arguments(parser, models=("vit_tiny",), pretrain_sizes=(0,),
                                    target_sizes=("1000", "full"),
                                    workdir_root="runs/transfer_study")
  args = parser.parse_args(argv)
  runs.log_progress()
  study = pretraining_scaling.study_from_args(args)
  if not args.collect_only:
    pretraining_scaling.run_stages(study, args.print_only)
  if args.print_only:
    return []
  rows = pretraining_scaling.collect(study)
  if rows:
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    design.write_csv(rows, output / "transfer_study.csv")
    (output / "transfer_study.md").write_text(markdown(rows, study))
    print((output / "transfer_study.md").read_text())
  return rows


if __name__ == "__main__":
  main()
