"""The studies end to end in miniature: tiny runs of a few steps on real MNIST-5k and digits images."""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from configs import fashion_mnist
from experiments import data_scaling
from experiments import transfer_study
from experiments import transfer_table
from vit_jax import models
from vit_jax import train
from vit_jax import workdir as workdir_lib
from vit_jax.evaluators import fewshot

# One block, a few steps, small evaluations: every run takes seconds.
MINI = ["model.transformer.num_layers=1", "total_steps=3", "batch_size=16", "eval_batch_size=96",
        "dataset.eval_split=test[:96]", "optimizer.warmup_steps=1", "log_every=1", "checkpoint_every=3"]
FEWSHOT_MINI = ["fewshot.dataset.train_split=train[:96]", "fewshot.dataset.eval_split=test[:96]",
                "fewshot.batch_size=96", "fewshot.shots=(1,2)", "fewshot.seeds=1"]


def write_results(workdir, accuracy):
  """Stands in for a finished run."""
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  workdir_lib.write_results(workdir, {"accuracy": accuracy})


def no_training(*args, **kwargs):
  raise AssertionError("A finished run was trained again.")


@pytest.mark.slow
def test_data_scaling_collects_every_run_once_and_plots(tmp_path, monkeypatch, capsys):
  # The Fashion-MNIST config (with its few-shot probes) on MNIST-5k images, which CI always has.
  args = ["--models", "vit_tiny", "vit_small", "--train_sizes", "32", "64",
          "--workdir_root", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "results"),
          "--override", "dataset.source=mnist5k", *MINI, *FEWSHOT_MINI]
  rows = data_scaling.main(args)
  assert [(r["model"], r["train_size"]) for r in rows] == [
      ("vit_tiny", 32), ("vit_tiny", 64), ("vit_small", 32), ("vit_small", 64)]
  assert all(0. <= r["accuracy"] <= 1. and 0. <= r["fewshot_2shot"] <= 1. for r in rows)
  csv_lines = (tmp_path / "results" / "data_scaling.csv").read_text().splitlines()
  assert csv_lines[0].startswith("model,train_size,accuracy,fewshot_1shot") and len(csv_lines) == 5
  assert (tmp_path / "results" / "data_scaling.png").read_bytes()[:4] == b"\x89PNG"

  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  assert data_scaling.main(args) == rows
  capsys.readouterr()
  data_scaling.main(args[:3] + ["--train_sizes", "64", "128"] + args[6:] + ["--print_only"])
  commands = capsys.readouterr().out.splitlines()
  assert len(commands) == 2 and all("'--config.dataset.train_split=train[:128]'" in c for c in commands)
  assert commands[0].startswith("python -m vit_jax.main --config=configs/fashion_mnist.py:vit_tiny "
                                f"--workdir={tmp_path}/runs/vit_tiny-128")


def test_resnet_baseline_is_the_stem_pooled_into_a_linear_head():
  config = fashion_mnist.get_config("resnet")
  model = models.create(config.model, num_classes=10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3))))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 28, 28, 3))), variables)
  params = variables["params"]
  assert {"conv_root", "block1", "block2", "embedding", "head"} <= set(params)
  assert logits.shape == (2, 10)
  assert set(params["Transformer"]) == {"posembed_input", "encoder_norm"}  # no transformer block


@pytest.mark.slow
def test_transfer_study_fine_tunes_at_a_higher_resolution_and_probes_few_shot(tmp_path):
  root = tmp_path / "runs"
  summary = transfer_study.main([
      "--model", "vit_tiny", "--workdir_root", str(root), "--output_dir", str(tmp_path / "results"),
      "--pretrain_override", "dataset.source=digits", *MINI, *FEWSHOT_MINI,
      "--target_override", "dataset.train_split=train[:64]", *MINI])
  _, pretrained = workdir_lib.load_params(root / "pretrain-vit_tiny")
  _, finetuned = workdir_lib.load_params(root / "finetune-vit_tiny")
  posemb = lambda params: params["Transformer"]["posembed_input"]["pos_embedding"].shape
  assert posemb(pretrained) == (1, 16, 64) and posemb(finetuned) == (1, 36, 64)  # 32 px -> 48 px
  table = (tmp_path / "results" / "transfer_study.md").read_text()
  assert "| vit_tiny | pretrained, fine-tuned" in table and "| random initialisation |" in table
  assert "| vit_tiny | pretrained, trained with the from-scratch recipe" in table
  assert "| features | 1-shot | 2-shot |" in table
  written = json.loads((tmp_path / "results" / "transfer_study.json").read_text())
  assert set(written) == {"pretrain", "finetune", "scratch", "pretrained_adamw",
                          "random_init_fewshot"} == set(summary)
  assert 0. <= written["finetune"]["accuracy"] <= 1. and written["scratch"]["steps"] == 3

  # The probes the training loop ran at its end, repeated standalone on the finished workdir.
  data = ml_collections.ConfigDict(dict(
      source="mnist5k", name="", data_dir="", train_split="train[:96]", eval_split="test[:96]",
      num_classes=10, image_size=32, prefetch=1))
  again = fewshot.evaluate_checkpoint(str(root / "pretrain-vit_tiny"), data, shots=(1, 2), seeds=1,
                                      l2_reg=1.0, batch_size=96)
  probed = {k: v for k, v in written["pretrain"].items() if k.startswith("fewshot_")}
  assert again == pytest.approx(probed)


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
                   f"--workdir={root}/oxford_iiit_pet --config.optimizer.learning_rate=0.003"]

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
def test_model_soup_fine_tunes_a_grid_and_reports_every_kind(tmp_path, monkeypatch, capsys):
  from experiments import model_soup  # pylint: disable=g-import-not-at-top
  from experiments import runs  # pylint: disable=g-import-not-at-top

  pretrain = runs.Run("fashion_mnist", "vit_tiny", str(tmp_path / "pretrain"),
                      runs.parse_overrides(["dataset.source=digits", *MINI]))
  runs.execute([pretrain], print_only=False)
  args = ["--arg", "vit_tiny,finetune", "--init_checkpoint", pretrain.workdir,
          "--learning_rates", "0.03", "0.1", "--seeds", "0", "--train_split", "train[:64]",
          "--held_out_split", "train[3904:]", "--workdir_root", str(tmp_path / "soup"),
          "--output_dir", str(tmp_path / "results"), "--override", *MINI]
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
def test_distillation_study_trains_teacher_plain_and_distilled_students(tmp_path):
  from experiments import distillation  # pylint: disable=g-import-not-at-top

  rows = distillation.main(["--student", "vit_tiny", "--train_sizes", "32",
                            "--workdir_root", str(tmp_path / "runs"), "--output_dir", str(tmp_path),
                            "--override", "dataset.source=mnist5k", *MINI])
  assert [(r["model"], r["teacher"]) for r in rows] == [
      ("resnet", ""), ("vit_tiny", ""), ("vit_tiny_distilled", "resnet")]
  assert all(r["train_images"] == 32 and 0. <= r["accuracy"] <= 1. for r in rows)
  assert (tmp_path / "distillation.csv").read_text().splitlines()[0] == "model,train_images,teacher,accuracy"
  _, student = workdir_lib.load_params(tmp_path / "runs" / "vit_tiny_distilled-32")
  assert {"dist", "head_dist"} <= set(student)
