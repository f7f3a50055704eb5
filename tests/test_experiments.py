"""The studies end to end in miniature: tiny runs of a few steps on real MNIST-5k and digits images."""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import pytest

from configs import fashion_mnist
from experiments import pretraining_scaling
from experiments import transfer_study
from experiments import transfer_table
from vit_jax import models
from vit_jax import train
from vit_jax import workdir as workdir_lib

# One block, a few steps, small evaluations: every run takes seconds.
MINI = ["model.transformer.num_layers=1", "total_steps=3", "batch_size=16", "eval_batch_size=96",
        "dataset.eval_split=test[:96]", "optimizer.warmup_steps=1", "log_every=1", "checkpoint_every=3"]
FEWSHOT_MINI = ["fewshot.dataset.train_split=train[:96]", "fewshot.dataset.eval_split=test[:96]",
                "fewshot.batch_size=96", "fewshot.shots=(1,2)", "fewshot.seeds=1"]
NO_FEWSHOT = "fewshot.shots=()"  # for studies that report no probe: the config's probes embed 3,000 images


def write_results(workdir, accuracy):
  """Stands in for a finished run."""
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  workdir_lib.write_results(workdir, {"accuracy": accuracy})


def no_training(*args, **kwargs):
  raise AssertionError("A finished run was trained again.")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> str:
  """An override that gives every run of these tests one compilation cache (the default, one per
  workdir, puts the workdir's path into XLA's options): runs that compile the same step share it."""
  return f"compilation_cache={tmp_path_factory.mktemp('compilation_cache')}"


def test_resnet_baseline_is_the_stem_pooled_into_a_linear_head():
  config = fashion_mnist.get_config("resnet")
  model = models.create(config.model, num_classes=10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3))))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 28, 28, 3))), variables)
  params = variables["params"]
  assert {"conv_root", "block1", "block2", "embedding", "head"} <= set(params)
  assert logits.shape == (2, 10)
  assert set(params["Transformer"]) == {"posembed_input", "encoder_norm"}  # no transformer block


PRETRAIN_MINI = ["model.transformer.num_layers=1", "batch_size=16", "eval_batch_size=40",
                 "dataset.num_categories=4", "optimizer.warmup_steps=1", "log_every=1",
                 "checkpoint_every=3", "fewshot.shots=(1,)", *FEWSHOT_MINI[:3], "fewshot.seeds=1"]
TARGET_MINI = ["model.transformer.num_layers=1", "batch_size=16", "eval_batch_size=96",
               "total_steps=3", "checkpoint_every=3", "optimizer.warmup_steps=1", "log_every=1"]


@pytest.mark.slow
def test_pretraining_scaling_and_transfer_study_in_miniature(tmp_path, monkeypatch, capsys,
                                                            shared_cache):
  root = str(tmp_path / "runs")
  args = ["--models", "vit_tiny", "--pretrain_sizes", "200", "0", "--targets", "digits",
          "--target_sizes", "200", "--seeds", "2", "--learning_rates", "0.001", "0.003",
          "--pretrain_steps", "3", "--workdir_root", root, "--output_dir", str(tmp_path / "results"),
          "--pretrain_override", *PRETRAIN_MINI, shared_cache, "--target_override", *TARGET_MINI,
          shared_cache]
  pretraining_scaling.main(args + ["--print_only"])
  printed = capsys.readouterr().out.splitlines()
  # Only what can start: both pretraining runs and the scratch sweep, not what needs a pretraining.
  assert len(printed) == 4 and sum("configs/pretrain/fractal_cpu.py:vit_tiny,fractal" in c
                                   for c in printed) == 2
  assert all("init_checkpoint" not in c for c in printed)

  rows = pretraining_scaling.main(args)
  assert [(r["model"], r["pretrain_images"], r["target"]) for r in rows] == [
      ("vit_tiny", 200, "digits-200"), ("vit_tiny", 0, "digits-200")]
  assert all(0 <= r[k] <= 1 for r in rows for k in ("accuracy", "scratch_accuracy", "fewshot_10shot"))
  assert rows[0]["scratch_accuracy"] == rows[1]["scratch_accuracy"] and rows[0]["seeds"] == 2
  header = (tmp_path / "results" / "pretraining_scaling.csv").read_text().splitlines()[0]
  assert header.startswith("model,pretrain_images,target,accuracy,scratch_accuracy,fewshot_10shot,")
  assert (tmp_path / "results" / "pretraining_scaling.png").read_bytes()[:4] == b"\x89PNG"

  # The learning rate is the sweep's best on the validation split; the final runs use the test split.
  study = pretraining_scaling.study_from_args(argparse.Namespace(
      **{**vars(_parsed(args)), "print_only": False}))
  sweep = study.sweep("vit_tiny", "unlimited", "digits", "200")
  best = max(sweep, key=lambda run: run.results()["accuracy"]).config().optimizer.learning_rate
  assert all(run.config().dataset.eval_split == "train[1200:]" for run in sweep)
  final = study.final("vit_tiny", "200", "digits", "200")
  config = final[0].config()
  assert config.dataset.eval_split == "test" and config.optimizer.learning_rate == best
  assert config.init_checkpoint == f"{root}/pretrain/vit_tiny-200"
  _, finetuned = workdir_lib.load_params(final[0].workdir)
  assert finetuned["head"]["kernel"].shape == (64, 10)  # a new head: 4 fractal classes -> 10 digits

  # The transfer study is the unlimited slice of the same runs: nothing is trained again.
  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  assert pretraining_scaling.main(args) == rows
  transfer_rows = transfer_study.main([
      "--models", "vit_tiny", "--pretrain_sizes", "0", "--targets", "digits", "--target_sizes",
      "200", "--seeds", "2", "--learning_rates", "0.001", "0.003", "--pretrain_steps", "3",
      "--workdir_root", root, "--output_dir", str(tmp_path / "results"),
      "--pretrain_override", *PRETRAIN_MINI, shared_cache, "--target_override", *TARGET_MINI,
      shared_cache])
  assert transfer_rows == rows[1:]
  table = (tmp_path / "results" / "transfer_study.md").read_text()
  assert "| vit_tiny | digits-200 |" in table and "10-shot probe: random init" in table


def _parsed(args: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  pretraining_scaling.add_arguments(parser, models=(), pretrain_sizes=(), target_sizes=(),
                                    workdir_root="")
  return parser.parse_args(args)


def test_transfer_table_sweeps_picks_the_best_rate_and_compares(tmp_path, capsys):
  root = str(tmp_path / "runs")
  args = ["--configs", "oxford_iiit_pet", "--sweep", "--print_only",
          "--workdir_root", root, "--output_dir", str(tmp_path / "results")]
  transfer_table.main(args)
  printed = capsys.readouterr().out.splitlines()
  assert sum("oxford_iiit_pet/sweep-lr" in line for line in printed) == 4
  assert "'--config.dataset.eval_split=train[90%:]'" in printed[0]

  for run, accuracy in zip(transfer_table.sweep_runs("oxford_iiit_pet", root), (.90, .93, .92, .91)):
    write_results(run.workdir, accuracy)
  transfer_table.main(args)
  final = [line for line in capsys.readouterr().out.splitlines()
           if f"--workdir={root}/oxford_iiit_pet " in line]
  assert final == [f"python -m vit_jax.main --config=configs/transfer/oxford_iiit_pet.py "
                   f"--workdir={root}/oxford_iiit_pet --config.host_device_per_core=False "
                   "--config.optimizer.learning_rate=0.003"]

  write_results(f"{root}/oxford_iiit_pet", 0.95)
  rows = transfer_table.main(args)
  assert (rows[0]["published"], rows[0]["ours"], rows[0]["difference"]) == ("94.43", "95.00", "0.57")
  assert rows[0]["learning rate"] == 0.003
  table = (tmp_path / "results" / "transfer_table.md").read_text()
  assert "| ViT-B_16 | oxford_iiit_pet | 384 | 94.43 | 95.00 | 0.57 |" in table


def test_transfer_table_real_row_shares_the_imagenet_run(tmp_path, capsys):
  rows = transfer_table.main(["--configs", "imagenet2012", "imagenet2012_real", "--print_only",
                              "--workdir_root", str(tmp_path), "--output_dir", str(tmp_path)])
  assert capsys.readouterr().out.count("--workdir=") == 1
  assert rows[0]["workdir"] == rows[1]["workdir"] == f"{tmp_path}/imagenet2012"
  assert rows[1]["published"] == "88.35" and rows[1]["ours"] == ""  # the run is not trained yet


@pytest.mark.slow
def test_model_soup_fine_tunes_a_grid_and_reports_every_kind(tmp_path, monkeypatch, capsys, shared_cache):
  from experiments import model_soup  # pylint: disable=g-import-not-at-top
  from experiments import runs  # pylint: disable=g-import-not-at-top

  pretrain = runs.Run("fashion_mnist", "vit_tiny", str(tmp_path / "pretrain"),
                      runs.parse_overrides(["dataset.source=digits", *MINI, NO_FEWSHOT, shared_cache]))
  runs.execute([pretrain], print_only=False)
  args = ["--arg", "vit_tiny,finetune", "--init_checkpoint", pretrain.workdir,
          "--learning_rates", "0.03", "0.1", "--seeds", "0", "--train_split", "train[:64]",
          "--held_out_split", "train[3904:]", "--workdir_root", str(tmp_path / "soup"),
          "--output_dir", str(tmp_path / "results"), "--override", *MINI, shared_cache]
  rows = model_soup.main(args)
  assert [r["kind"] for r in rows] == ["ingredient", "ingredient", "best_ingredient", "uniform_soup",
                                       "greedy_soup"]
  ingredients, best, greedy = rows[:2], rows[2], rows[4]
  assert best["name"] in {r["name"] for r in ingredients}
  assert best["held_out_accuracy"] == max(r["held_out_accuracy"] for r in ingredients)
  assert greedy["held_out_accuracy"] >= best["held_out_accuracy"]  # greedy never drops held-out accuracy
  assert all(0. <= r["accuracy"] <= 1. for r in rows)
  lines = (tmp_path / "results" / "model_soup.csv").read_text().splitlines()
  assert lines[0] == "name,kind,accuracy,held_out_accuracy" and len(lines) == 6

  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  again = model_soup.main(["--workdirs", *(str(tmp_path / "soup" / r["name"]) for r in ingredients),
                           "--held_out_split", "train[3904:]", "--output_dir", str(tmp_path / "again")])
  assert [r["accuracy"] for r in again] == pytest.approx([r["accuracy"] for r in rows])
  capsys.readouterr()
  model_soup.main(args[:6] + ["0.3"] + args[7:] + ["--print_only"])
  commands = capsys.readouterr().out.splitlines()
  assert len(commands) == 1 and "--config.optimizer.learning_rate=0.3 " in commands[0]


@pytest.mark.slow
def test_distillation_study_trains_teacher_plain_and_distilled_students(tmp_path, shared_cache):
  from experiments import distillation  # pylint: disable=g-import-not-at-top

  rows = distillation.main(["--student", "vit_tiny", "--train_sizes", "32",
                            "--workdir_root", str(tmp_path / "runs"), "--output_dir", str(tmp_path),
                            "--override", "dataset.source=mnist5k", *MINI, NO_FEWSHOT, shared_cache])
  assert [(r["model"], r["teacher"]) for r in rows] == [
      ("resnet", ""), ("vit_tiny", ""), ("vit_tiny_distilled", "resnet")]
  assert all(r["train_images"] == 32 and 0. <= r["accuracy"] <= 1. for r in rows)
  assert (tmp_path / "distillation.csv").read_text().splitlines()[0] == "model,train_images,teacher,accuracy"
  _, student = workdir_lib.load_params(tmp_path / "runs" / "vit_tiny_distilled-32")
  assert {"dist", "head_dist"} <= set(student)


def test_augmentation_study_reads_ema_beside_each_baseline_and_resumes(tmp_path, monkeypatch, shared_cache):
  from experiments import augmentation  # pylint: disable=g-import-not-at-top

  args = ["--models", "vit_tiny", "--train_sizes", "32", "--seeds", "0",
          "--workdir_root", str(tmp_path / "runs"), "--output_dir", str(tmp_path),
          "--override", "dataset.source=mnist5k", *MINI, shared_cache]
  rows = augmentation.main(args)
  assert [r["variant"] for r in rows] == ["baseline", "ema", "randaugment", "cutmix"]
  baseline = workdir_lib.read_results(tmp_path / "runs" / "baseline-seed0" / "vit_tiny-32")
  assert rows[1]["accuracy"] == round(baseline["ema_accuracy"], 4)
  randaugment = workdir_lib.read_config(tmp_path / "runs" / "randaugment-seed0" / "vit_tiny-32")
  assert randaugment.dataset.randaugment_reference_size == 224 and not randaugment.fewshot.shots
  table = (tmp_path / "augmentation.md").read_text().splitlines()
  assert table[0] == "| model | train images | baseline | ema | randaugment | cutmix |"
  assert table[2].startswith("| vit_tiny | 32 | ") and table[2].count("(n=1)") == 4
  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  assert augmentation.main(args) == rows
