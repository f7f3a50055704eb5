"""The paper's transfer table, reproduced: our fine-tuning runs beside the published accuracies.

Each NAME[:ARG] names a config of configs/transfer/ (`cifar10`, `cifar10:ViT-B_16,224`,
`vtab:caltech101`); its run goes in `WORKDIR_ROOT/NAME-ARG` (the ImageNet-ReaL row scores the final
params of the ImageNet run on the ReaL labels, so both share one). Unfinished runs are trained here one after another, or with --print_only their
launch commands are printed; then transfer_table.md and transfer_table.csv get one row per config:
model | data set | resolution | published | ours | difference (percentage points), with the source.

With --sweep, the paper's protocol: every learning rate of the config's `lr_sweep` is first trained on
`sweep_splits[0]` and scored on `sweep_splits[1]` (held-out training images), then the final run uses
the best. Launched from a cluster, print the sweep, run it, then print again for the final runs.

  python experiments/transfer_table.py --print_only --configs cifar10 cifar100 oxford_iiit_pet \
      oxford_flowers102 imagenet2012 imagenet2012_real vtab:caltech101
  python experiments/transfer_table.py --sweep --configs oxford_iiit_pet:ViT-B_32 \
      --workdir_root=runs/transfer
"""

import argparse
import csv
import importlib
import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from experiments import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position

COLUMNS = ("model", "data set", "resolution", "published", "ours", "difference", "learning rate",
           "source", "workdir")
# Rows scored from another config's run: ReaL relabels the ImageNet validation images.
SHARED_RUN = {"imagenet2012_real": "imagenet2012"}


def load_config(spec: str) -> ml_collections.ConfigDict:
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.transfer.{name}").get_config(arg or None)


def final_run(spec: str, workdir_root: str, learning_rate: float | None = None) -> runs.Run:
  name, _, arg = spec.partition(":")
  name = SHARED_RUN.get(name, name)
  slug = re.sub(r"[^\w.+-]", "_", f"{name}-{arg}" if arg else name)
  overrides = () if learning_rate is None else (("optimizer.learning_rate", learning_rate),)
  return runs.Run(f"transfer.{name}", arg or None, f"{workdir_root}/{slug}", overrides)


def sweep_runs(spec: str, workdir_root: str) -> list[runs.Run]:
  """One run per learning rate of the grid, trained and scored on the held-out splits."""
  base = final_run(spec, workdir_root)
  config = base.config()
  train_split, val_split = config.sweep_splits
  return [runs.Run(base.config_module, base.arg, f"{base.workdir}/sweep-lr{lr}",
                   (("optimizer.learning_rate", lr), ("dataset.train_split", train_split),
                    ("dataset.eval_split", val_split)))
          for lr in config.lr_sweep]


def best_learning_rate(sweep: list[runs.Run]) -> float | None:
  """The learning rate with the best held-out accuracy, once every run of the sweep is finished."""
  scores = [(run.results(), dict(run.overrides)["optimizer.learning_rate"]) for run in sweep]
  if any(results is None for results, _ in scores):
    return None
  return max(scores, key=lambda s: s[0]["accuracy"])[1]


def scored_results(spec: str, run: runs.Run) -> dict | None:
  """`run`'s results, or for a row that shares another config's run (ReaL), that run's final params
  scored on this config's eval split (computed once, then kept beside the run's results.json)."""
  name = spec.partition(":")[0]
  if name not in SHARED_RUN or run.results() is None:
    return run.results()
  path = pathlib.Path(run.workdir, f"results-{name}.json")
  if not path.exists():
    from vit_jax import train  # pylint: disable=g-import-not-at-top  # TensorFlow: only when needed
    path.write_text(json.dumps(train.evaluate_checkpoint(load_config(spec), run.workdir), indent=2))
  return json.loads(path.read_text())


def row(spec: str, run: runs.Run) -> dict:
  """The table row of `spec`, scored from `run`."""
  config = load_config(spec)
  published, results = config.published.accuracy, scored_results(spec, run)
  ours = results["accuracy"] if results is not None else None
  percent = lambda x: "" if x is None else f"{100 * x:.2f}"
  name, _, arg = spec.partition(":")
  return {
      "model": config.model.model_name,
      "data set": f"vtab/{arg.split(',')[0]}" if name == "vtab" else name,
      "resolution": config.dataset.image_size,
      "published": percent(published),
      "ours": percent(ours),
      "difference": percent(None if ours is None or published is None else ours - published),
      "learning rate": run.config().optimizer.learning_rate,
      "source": config.published.source,
      "workdir": run.workdir,
  }


def write_tables(rows: list[dict], output: pathlib.Path) -> None:
  output.mkdir(parents=True, exist_ok=True)
  with (output / "transfer_table.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  shown = COLUMNS[:6]
  lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
  lines += ["| " + " | ".join(str(r[c]) if r[c] != "" else "—" for c in shown) + " |" for r in rows]
  sources = sorted({r["source"] for r in rows if r["published"]})
  lines += ["", "Published: " + "; ".join(sources) + ". Accuracies in %, difference in points."]
  (output / "transfer_table.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", nargs="+", required=True, metavar="NAME[:ARG]",
                      help="Configs of configs/transfer/, e.g. cifar10 cifar10:ViT-L_16 vtab:dtd.")
  parser.add_argument("--sweep", action="store_true",
                      help="Choose each learning rate on held-out training images first.")
  runs.add_study_flags(parser, "runs/transfer", override=False)
  args = parser.parse_args(argv)

  runs.log_progress()
  finals = {}
  for spec in args.configs:
    learning_rate = None
    if args.sweep:
      sweep = sweep_runs(spec, args.workdir_root)
      runs.execute(sweep, print_only=args.print_only)
      learning_rate = best_learning_rate(sweep)
      if learning_rate is None:
        print(f"# {spec}: the final run follows once the sweep above is finished.", flush=True)
        continue
    finals[spec] = final_run(spec, args.workdir_root, learning_rate)
  runs.execute(dict.fromkeys(finals.values()), print_only=args.print_only)
  rows = [row(spec, run) for spec, run in finals.items()]
  if rows:
    write_tables(rows, pathlib.Path(args.output_dir))
  return rows


if __name__ == "__main__":
  main()
