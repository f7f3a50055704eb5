"""Transfer study on real data that fits 2 CPU cores: pretrain on Fashion-MNIST, fine-tune on MNIST-5k.

  pretrain  configs/fashion_mnist.py:MODEL on all 60,000 images at 32 px (upsampled from 28). At its end the periodic
            few-shot evaluator (config.fewshot) probes the frozen features on MNIST-5k: 1/5/10/25
            examples per class, closed-form ridge regression, mean of 3 draws.
  finetune  configs/mnist5k.py:MODEL,finetune at 48 px from the pretrained run: the position embeddings
            are resized (a 4x4 grid of patches becomes 6x6), the head is replaced by a zero one, and
            the paper's SGD fine-tuning recipe runs.
  scratch   configs/mnist5k.py:MODEL, the same model trained from scratch on MNIST-5k at 48 px (AdamW,
            as many steps as the fine-tuning).
  pretrained_adamw  the pretrained model trained with the from-scratch recipe: separates what the
            start brings from what the optimizer does.
The same probes on the randomly initialised model give the no-pretraining reference. Writes
transfer_study.md (the table for the README) and transfer_study.json. Runs are resumable; --print_only
prints their launch commands (the fine-tuning one needs the pretraining finished).

The real study (vit_small): about 12 minutes on 2 quiet CPU cores:
  python experiments/transfer_study.py --workdir_root=runs/transfer_study \
      --output_dir=experiments/results
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position


def study_runs(model: str, workdir_root: str, pretrain_overrides: tuple = (),
               target_overrides: tuple = ()) -> dict[str, runs.Run]:
  pretrain = runs.Run("fashion_mnist", model, f"{workdir_root}/pretrain-{model}", pretrain_overrides)
  return dict(
      pretrain=pretrain,
      finetune=runs.Run("mnist5k", f"{model},finetune", f"{workdir_root}/finetune-{model}",
                        (("init_checkpoint", pretrain.workdir),) + tuple(target_overrides)),
      scratch=runs.Run("mnist5k", model, f"{workdir_root}/scratch-{model}", tuple(target_overrides)),
      # The control that separates the start from the optimizer: the pretrained model, trained with
      # the from-scratch recipe.
      pretrained_adamw=runs.Run("mnist5k", model, f"{workdir_root}/pretrained_adamw-{model}",
                                (("init_checkpoint", pretrain.workdir),) + tuple(target_overrides)),
  )


def random_init_fewshot(run: runs.Run) -> dict[str, float]:
  """The pretraining run's few-shot probes on its model before any training."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vit_jax import models  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding  # pylint: disable=g-import-not-at-top
  from vit_jax.evaluators import fewshot  # pylint: disable=g-import-not-at-top

  config = run.config()
  size = config.dataset.image_size
  params = models.create(config.model, num_classes=0).init(
      jax.random.key(config.seed), jnp.zeros((1, size, size, 3)), train=False)["params"]
  return fewshot.from_config(config, sharding.create_mesh(config.mesh))(params)


def markdown(model: str, study: dict[str, runs.Run], results: dict[str, dict],
             random_fewshot: dict[str, float]) -> str:
  configs = {name: run.config() for name, run in study.items()}
  pretrain, finetune, scratch, adamw = (
      results[name] for name in ("pretrain", "finetune", "scratch", "pretrained_adamw"))
  source, target = configs["pretrain"].dataset, configs["finetune"].dataset
  probes = configs["pretrain"].fewshot
  from vit_jax.evaluators import fewshot  # pylint: disable=g-import-not-at-top
  shots = sorted(int(k.removeprefix("fewshot_").removesuffix("shot")) for k in pretrain
                 if k.startswith("fewshot_"))
  percent = lambda x: f"{100 * x:.1f}%"
  lines = [
      f"Transfer from {source.source} to {target.source} ({model}). Pretraining: {source.train_split} "
      f"at {source.image_size} px, {pretrain['steps']:,} steps, {percent(pretrain['accuracy'])} on "
      f"its own test split.",
      "",
      f"| {target.source} model | initialisation | resolution | steps | test accuracy |",
      "|---|---|---|---|---|",
      f"| {model} | pretrained, fine-tuned (SGD, new zero head, position embeddings resized) | "
      f"{source.image_size} -> {target.image_size} px | {finetune['steps']:,} | "
      f"{percent(finetune['accuracy'])} |",
      f"| {model} | pretrained, trained with the from-scratch recipe (AdamW, same new head and "
      f"resizing) | {source.image_size} -> {target.image_size} px | {adamw['steps']:,} | "
      f"{percent(adamw['accuracy'])} |",
      f"| {model} | random, trained from scratch (AdamW) | {target.image_size} px | "
      f"{scratch['steps']:,} | {percent(scratch['accuracy'])} |",
      "",
      f"Few-shot linear probes on {target.source} (frozen {source.image_size}-px features, "
      f"{fewshot.describe(probes.get('protocol', 'big_vision'), probes.get('l2_reg'))}, mean over "
      "draws of the shots):",
      "",
      "| features | " + " | ".join(f"{k}-shot" for k in shots) + " |",
      "|---|" + "---|" * len(shots),
      f"| pretrained on {source.source} | "
      + " | ".join(percent(pretrain[f"fewshot_{k}shot"]) for k in shots) + " |",
      "| random initialisation | "
      + " | ".join(percent(random_fewshot[f"fewshot_{k}shot"]) for k in shots) + " |",
  ]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="vit_small", help="vit_tiny, vit_small or resnet.")
  parser.add_argument("--workdir_root", default="runs/transfer_study")
  parser.add_argument("--output_dir", default="experiments/results",
                      help="Where transfer_study.md and transfer_study.json go.")
  parser.add_argument("--pretrain_override", nargs="*", default=[], metavar="KEY=VALUE",
                      help="Config overrides of the pretraining run.")
  parser.add_argument("--target_override", nargs="*", default=[], metavar="KEY=VALUE",
                      help="Config overrides of both MNIST-5k runs.")
  parser.add_argument("--print_only", action="store_true",
                      help="Print the launch command of each unfinished run instead of training.")
  args = parser.parse_args(argv)

  runs.log_progress()
  study = study_runs(args.model, args.workdir_root, runs.parse_overrides(args.pretrain_override),
                     runs.parse_overrides(args.target_override))
  runs.execute(study.values(), print_only=args.print_only)
  results = {name: run.results() for name, run in study.items()}
  if any(r is None for r in results.values()):
    return {}
  random_fewshot = random_init_fewshot(study["pretrain"])
  output = pathlib.Path(args.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  (output / "transfer_study.md").write_text(markdown(args.model, study, results, random_fewshot))
  summary = {name: {k: v for k, v in r.items() if k != "config"} for name, r in results.items()}
  summary["random_init_fewshot"] = random_fewshot
  (output / "transfer_study.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
  print((output / "transfer_study.md").read_text())
  return summary


if __name__ == "__main__":
  main()
