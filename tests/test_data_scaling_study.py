"""The data-scaling study's design: rates and checkpoints chosen on validation, seeds read on test."""

import json
import pathlib

from matplotlib import axes
import pytest

from experiments import data_scaling
from experiments import runs
from experiments import scoring
from vit_jax import train
from vit_jax import workdir as workdir_lib

VALIDATION = "train[1200:]"  # digits', cut from its training split


def make_study(root: pathlib.Path, **changes) -> data_scaling.Study:
  settings = dict(config="fashion_mnist", target="digits", models=("vit_tiny",), sizes=(32, 64),
                  learning_rates=(0.001, 0.003), seeds=(0, 1), workdir_root=str(root))
  return data_scaling.Study(**{**settings, **changes})


def finish(run, *, validation: float, test: float, best_step: int = 4) -> None:
  """Stands in for a finished, scored run."""
  path = pathlib.Path(run.workdir)
  path.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_results(path, {"accuracy": validation, "steps": 4, "train_seconds": 1.0})
  (path / data_scaling.SELECTION_FILE).write_text(json.dumps(
      dict(best_step=best_step, validation_accuracy=validation, test={"accuracy": test})))


def test_runs_train_before_the_validation_split_and_evaluate_on_it(tmp_path):
  config = make_study(tmp_path).run("vit_tiny", 64, 0.003, 1).config()
  assert (config.dataset.source, config.dataset.train_split) == ("digits", "train[:64]")
  assert config.dataset.eval_split == VALIDATION
  assert (config.optimizer.learning_rate, config.seed) == (0.003, 1)
  assert config.checkpoint_every == config.keep_checkpoint_every == data_scaling.EVAL_EVERY


def test_runs_train_on_the_cpu_default_of_one_host_device_per_core(tmp_path):
  """The study's CSV was recorded on vit_jax.main's default, unlike the pinned studies'."""
  run = make_study(tmp_path).run("vit_tiny", 64, 0.003, 1)
  assert run.config().host_device_per_core is True
  assert "host_device_per_core" not in run.command()


def test_training_sizes_that_reach_into_the_validation_split_are_refused(tmp_path):
  with pytest.raises(ValueError, match=r"1201 is more than the 1200 .* train\[1200:\]"):
    make_study(tmp_path, sizes=(32, 1201))


def test_middle_sizes_take_the_rate_of_the_nearer_swept_size_in_log_scale(tmp_path):
  study = make_study(tmp_path, sizes=(100, 190, 210, 400))  # sqrt(100 * 400) = 200
  assert [study.sweep_size(n) for n in study.sizes] == [100, 100, 400, 400]
  assert {run.config().dataset.train_split for run in study.sweep("vit_tiny", 190)} == {"train[:100]"}


def test_rate_is_chosen_on_validation_and_reported_on_test(tmp_path):
  # At 32 images the validation split prefers 0.001, the test split 0.003; at 64 the reverse.
  study = make_study(tmp_path)
  for size, (low, high) in ((32, (.9, .5)), (64, (.5, .9))):
    finish(study.run("vit_tiny", size, 0.001, 0), validation=low, test=1 - low)
    finish(study.run("vit_tiny", size, 0.003, 0), validation=high, test=1 - high)
  assert [study.best_learning_rate("vit_tiny", n) for n in (32, 64)] == [0.001, 0.003]
  assert data_scaling.collect(study) == []  # seed 1 is not trained yet
  finish(study.run("vit_tiny", 32, 0.001, 1), validation=.8, test=.2, best_step=2)
  finish(study.run("vit_tiny", 64, 0.003, 1), validation=.8, test=.3)
  rows = data_scaling.collect(study)
  assert [(r["train_size"], r["learning_rate"]) for r in rows] == [(32, 0.001), (64, 0.003)]
  assert rows[0]["accuracy"] == pytest.approx(.15)  # the test accuracies of the validation's choice
  assert rows[0]["accuracy_std"] == pytest.approx(.1 / 2 ** .5, abs=1e-4)
  assert rows[0]["validation_accuracy"] == pytest.approx(.85) and rows[0]["best_step"] == 2
  assert rows[1]["accuracy"] == pytest.approx(.2) and rows[1]["seeds"] == 2


def test_checkpoint_is_chosen_on_validation_and_only_it_is_tested(tmp_path, monkeypatch):
  # Stubs: the "params" of a checkpoint are its step; validation peaks at step 200, test at 300.
  study = make_study(tmp_path, sizes=(64,))
  run = study.run("vit_tiny", 64, 0.001, 0)
  pathlib.Path(run.workdir).mkdir(parents=True)
  workdir_lib.write_results(run.workdir, {"steps": 600})
  loaded, scored = [], []
  monkeypatch.setattr(workdir_lib, "load_params",
                      lambda workdir, step: (loaded.append(step), (None, step))[1])
  accuracies = {VALIDATION: {100: .5, 200: .7, 300: .6, 400: .6, 500: .7, 600: .6},
                "test": {100: .4, 200: .4, 300: .9, 400: .4, 500: .4, 600: .4}}
  monkeypatch.setattr(scoring, "make_evaluator", lambda config, split, probes: (
      scored.append((split, probes)), lambda step: {"accuracy": accuracies[split][step]})[1])
  selection = study.select(run)
  assert loaded == [100, 200, 300, 400, 500, 600] and scored == [(VALIDATION, False), ("test", True)]
  assert selection["best_step"] == 200  # the earliest of the validation split's best
  assert selection["validation_accuracy"] == .7 and selection["test"] == {"accuracy": .4}
  assert study.select(run) == selection and len(scored) == 2  # kept in the workdir, scored once


def no_training(*args, **kwargs):
  raise AssertionError("A finished run was trained again.")


MINI = ["model.transformer.num_layers=1", "total_steps=4", "batch_size=16", "eval_batch_size=96",
        "optimizer.warmup_steps=1", "log_every=2", "fewshot.dataset.source=digits",
        "fewshot.dataset.train_split=train[:192]", "fewshot.dataset.eval_split=test[:96]",
        "fewshot.batch_size=96", "fewshot.shots=(10,)", "fewshot.seeds=1"]


def study_args(root: pathlib.Path, output: pathlib.Path, seeds: int) -> list[str]:
  """The runs share one compilation cache beside `root` (the default, one per workdir, puts the
  workdir's path into XLA's options): runs of the same rate compile the same steps."""
  return ["--target", "digits", "--models", "vit_tiny", "--train_sizes", "32", "64",
          "--seeds", str(seeds), "--learning_rates", "0.001", "0.003", "--eval_every", "2",
          "--workdir_root", str(root), "--output_dir", str(output), "--override", *MINI,
          f"compilation_cache={root.parent / 'compilation_cache'}"]


@pytest.mark.slow
def test_study_in_miniature_chooses_on_validation_resumes_and_prints_what_can_start(
    tmp_path, monkeypatch, capsys):
  # The Fashion-MNIST recipe on scikit-learn digits (CI always has them; they load fast): 1 model,
  # 2 sizes, 2 rates, 2 seeds: 2 x 2 sweep runs (seed 0), then seed 1 of each size at its chosen rate.
  root, output = tmp_path / "runs", tmp_path / "results"
  args = study_args(root, output, seeds=2)
  data_scaling.main(args + ["--print_only"])
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == 4 and all("--config.seed=0" in c and f"eval_split={VALIDATION}" in c
                                   for c in printed)

  bars = []
  original = axes.Axes.errorbar
  monkeypatch.setattr(axes.Axes, "errorbar", lambda self, x, y, yerr, **kw: (
      bars.append((x, yerr)), original(self, x, y, yerr=yerr, **kw))[1])
  rows = data_scaling.main(args)
  assert [(r["model"], r["train_size"], r["seeds"]) for r in rows] == [("vit_tiny", 32, 2),
                                                                        ("vit_tiny", 64, 2)]
  header = (output / "data_scaling.csv").read_text().splitlines()[0]
  assert header == ("model,train_size,accuracy,accuracy_std,validation_accuracy,learning_rate,"
                    "best_step,fewshot_10shot,fewshot_10shot_std,seeds,steps,train_seconds")
  study = make_study(root, overrides=runs.parse_overrides(MINI), eval_every=2)
  for row in rows:
    sweep = study.sweep("vit_tiny", row["train_size"])
    best = max(range(2), key=lambda i: study.select(sweep[i])["validation_accuracy"])
    assert row["learning_rate"] == study.learning_rates[best]
    finals = study.finals("vit_tiny", row["train_size"])
    assert finals[0].workdir == sweep[best].workdir  # the sweep's best run is seed 0 of the point
    selections = [study.select(run) for run in finals]
    for selection in selections:
      validation = {int(step): accuracy for step, accuracy in selection["validation"].items()}
      assert list(validation) == [2, 4] and selection["best_step"] == max(validation, key=validation.get)
    tests = [s["test"]["accuracy"] for s in selections]
    assert row["accuracy"] == pytest.approx(sum(tests) / 2, abs=1e-4)
    assert row["accuracy_std"] == pytest.approx(abs(tests[0] - tests[1]) / 2 ** .5, abs=1e-4)
  workdir = study.sweep("vit_tiny", 32)[0].workdir  # every scored checkpoint is kept
  (_, early), (_, last) = workdir_lib.load_params(workdir, step=2), workdir_lib.load_params(workdir)
  assert (early["head"]["kernel"] != last["head"]["kernel"]).any()
  with pytest.raises(FileNotFoundError, match=r"No checkpoint of step 3 .* its steps: \[2, 4\]"):
    workdir_lib.load_params(workdir, step=3)
  assert (output / "data_scaling.png").read_bytes()[:4] == b"\x89PNG"
  assert len(bars) == 2 and bars[0][0] == [32, 64]  # accuracy, then the 10-shot probe
  assert bars[0][1] == pytest.approx([100 * r["accuracy_std"] for r in rows])

  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  monkeypatch.setattr(scoring, "make_evaluator", no_training)
  assert data_scaling.main(args) == rows
  capsys.readouterr()
  data_scaling.main(study_args(root, output, seeds=3) + ["--print_only"])
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == 2 and all(f"-{row['train_size']}-lr{row['learning_rate']:g}-seed2 " in c
                                   and "--config.seed=2" in c for row, c in zip(rows, printed))
