"""A study's finished runs: reused only when they were trained with the config the study asks for."""

import ml_collections
import pytest

from experiments import runs
from vit_jax import workdir as workdir_lib


def finished(run: runs.Run, stored: ml_collections.ConfigDict) -> None:
  workdir_lib.write_config(run.workdir, stored)
  workdir_lib.write_results(run.workdir, {"accuracy": 0.75})


def test_a_finished_run_is_reused_when_only_how_it_ran_differs(tmp_path):
  run = runs.Run("digits", None, str(tmp_path / "run"), (("total_steps", 20), ("seed", 1)))
  stored = run.config()
  stored.log_every, stored.dataset.threads = 7, 3  # execution keys: not what the run computes
  del stored.dataset["randaugment_reference_size"]  # a key the code added after the run
  finished(run, stored)
  assert run.results() == {"accuracy": 0.75}


@pytest.mark.parametrize("key, stored_value, message", [
    ("total_steps", 10, "total_steps: 10 in the run, 20 now"),
    ("dataset.source", "fashion_mnist", "dataset.source: 'fashion_mnist' in the run, 'digits' now"),
    ("optimizer.learning_rate", 0.1, "optimizer.learning_rate: 0.1 in the run, 0.003 now"),
])
def test_a_finished_run_of_another_config_is_an_error_not_a_silent_reuse(tmp_path, key, stored_value,
                                                                        message):
  run = runs.Run("digits", None, str(tmp_path / "run"),
                 (("total_steps", 20), ("optimizer.learning_rate", 0.003)))
  stored = run.config()
  section, _, name = key.rpartition(".")
  (stored[section] if section else stored)[name] = stored_value
  finished(run, stored)
  with pytest.raises(runs.StaleRunError) as error:
    run.results()
  assert str(error.value) == (f"{run.workdir} holds a finished run of another config ({message}). "
                              "Move it away to rerun it, or use another --workdir_root for this study.")


def test_a_sigterm_stops_the_study_after_the_run_it_preempted(tmp_path, monkeypatch):
  from vit_jax import train  # pylint: disable=g-import-not-at-top

  trained = []

  def preempted_run(config, workdir):
    del config
    trained.append(workdir)
    return None, {"preempted": True}

  monkeypatch.setattr(train, "train_and_evaluate", preempted_run)
  study = [runs.Run("digits", None, str(tmp_path / name)) for name in ("first", "second")]
  with pytest.raises(SystemExit, match=f"SIGTERM: {tmp_path / 'first'} saved its last step and the "
                     "study stops; rerun the same command to resume."):
    runs.execute(study, print_only=False)
  assert trained == [str(tmp_path / "first")]


def test_collect_only_trains_nothing_and_writes_only_finished_points(tmp_path, monkeypatch):
  from experiments import pretraining_scaling  # pylint: disable=g-import-not-at-top
  from experiments import transfer_study  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top

  def no_training(*args, **kwargs):
    raise AssertionError("--collect_only trained a run.")

  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  args = ["--models", "vit_tiny", "--pretrain_sizes", "0", "--targets", "digits", "--seeds", "1",
          "--workdir_root", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "out"),
          "--collect_only"]
  assert pretraining_scaling.main(args) == [] and transfer_study.main(args) == []
  assert not (tmp_path / "out").exists()


def test_study_runs_train_on_one_cpu_device_unless_overridden(tmp_path):
  """The recorded results were trained on one device: the default's host devices would change their
  rounding. The pin is in the printed launch command too, and a run's own override wins."""
  pinned = runs.Run("digits", None, str(tmp_path / "run"), (("total_steps", 20),))
  assert pinned.config().host_device_per_core is False
  assert "--config.host_device_per_core=False" in pinned.command()
  faster = runs.Run("digits", None, str(tmp_path / "run"), (("host_device_per_core", True),))
  assert faster.config().host_device_per_core is True
  assert faster.command().endswith(
      "--config.host_device_per_core=False --config.host_device_per_core=True")
