"""The benchmark scripts run, in a tiny form, and report what the issue asks of them."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import input_pipeline as input_pipeline_benchmark
from benchmarks import throughput

REPO = pathlib.Path(__file__).resolve().parents[1]
# A one-block ViT on 32x32 images: compiles in a second or two.
TINY = ["--model=ViT-Ti_16", "--res=32", "--batch=2", "--override=transformer.num_layers=1",
        "--override=hidden_size=64", "--override=transformer.num_heads=2",
        "--num_classes=10", "--repeats=1", "--warmup=1", "--pause=0",
        "--peak_size=256"]
REQUIRED_KEYS = ("images_per_second", "compile_seconds", "achieved_flops_per_second",
                 "peak_flops_per_second", "mfu")


def _clean_env() -> dict[str, str]:
  """The environment without the test suite's 8 fake devices."""
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def test_throughput_cli_prints_one_json_object_with_positive_numbers():
  out = subprocess.run([sys.executable, "-m", "benchmarks.throughput", *TINY, "--mode=infer", "--json"],
                       cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  for key in REQUIRED_KEYS:
    assert result[key] > 0, key
  assert "img/s" in out.stderr  # The one-line summary.
  assert result["reuse_freed_memory"] is True  # vit_jax's CPU default (vit_jax/host_memory.py)


def test_cpu_script_runs_its_rows_and_prints_the_table(tmp_path):
  # The rows' models made tiny: EXTRA's flags come last and override the rows' own.
  env = dict(_clean_env(), ROWS="infer_b16 compile_h14_scan", OUT=str(tmp_path), REPEATS="1",
             EXTRA=" ".join(TINY))
  out = subprocess.run(["bash", "benchmarks/cpu.sh"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  infer = json.loads((tmp_path / "infer_b16.json").read_text())
  table = out.stdout.splitlines()
  assert f"| infer_b16 | 2 | {infer['images_per_second']:.2f} |" in "\n".join(table)
  compile_row = next(line for line in table if line.startswith("| compile_h14_scan |"))
  assert compile_row.split(" | ")[2] == "-"  # compile only: no throughput
  assert "Device cpu" in out.stdout


def test_gradient_mode_counts_about_three_forwards_and_has_no_peer(capsys):
  infer, grad = (throughput.benchmark(throughput.parse_args([*TINY, f"--mode={mode}"]))
                 for mode in ("infer", "grad"))
  assert 2.5 < grad["flops_per_step"] / infer["flops_per_step"] < 3.5
  assert grad["images_per_second"] > 0
  with pytest.raises(SystemExit):
    throughput.parse_args([*TINY, "--mode=grad", "--peer=timm"])
  assert "--mode=grad has no peer" in capsys.readouterr().err


def test_throughput_train_step_reports_flops_and_mfu():
  result = throughput.benchmark(throughput.parse_args([*TINY, "--mode=train"]))
  for key in REQUIRED_KEYS:
    assert result[key] > 0, key
  assert result["flops_per_image"] * result["images_per_second"] == pytest.approx(
      result["achieved_flops_per_second"])


def test_compile_only_allocates_nothing_and_reports_compile_time():
  result = throughput.benchmark(throughput.parse_args([*TINY, "--mode=train", "--scan",
                                                      "--compile_only"]))
  assert result["compile_seconds"] > 0
  assert result["num_params"] > 0
  assert "images_per_second" not in result


def test_peer_timm_without_the_bench_extra_names_it():
  # timm made unimportable in the subprocess: the core install has no torch, and importing torch next
  # to TensorFlow segfaults the test worker. The peer rows themselves run in benchmarks/cpu.sh.
  code = ("import runpy, sys; sys.modules['timm'] = None; "
          "runpy.run_module('benchmarks.throughput', run_name='__main__')")
  out = subprocess.run([sys.executable, "-c", code, *TINY, "--mode=train", "--peer=timm", "--json"],
                       cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "--peer=timm needs torch and timm (timm is missing): pip install -e '.[bench]'" in out.stderr


def test_unknown_override_key_fails_with_the_key():
  with pytest.raises(ValueError, match="no key 'transformer.num_layerz'"):
    throughput.model_config(throughput.parse_args(["--override=transformer.num_layerz=2"]))


def test_benchmarks_import_without_tensorflow_or_torch():
  """The GPU machine has no TensorFlow; the core package must never import torch."""
  code = ("import sys, benchmarks.throughput, vit_jax.steps; "
          "bad = {'tensorflow', 'torch', 'timm', 'clu'} & set(sys.modules); assert not bad, bad")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(),
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr


def test_input_pipeline_reports_images_per_second_per_core():
  args = input_pipeline_benchmark.parse_args(
      ["--num_images=16", "--image_size=64x48", "--batch=8", "--res=32", "--batches=2",
       "--repeats=1", "--warmup=1"])
  result = input_pipeline_benchmark.benchmark(args)
  assert result["images_per_second"] > 0
  assert result["cores"] >= 1
  assert result["images_per_second_per_core"] == pytest.approx(
      result["images_per_second"] / result["cores"])


def test_input_pipeline_times_the_synthetic_sources():
  args = input_pipeline_benchmark.parse_args(
      ["--source=contours", "--num_categories=10", "--batch=16", "--res=16", "--batches=2",
       "--repeats=1", "--warmup=1", "--augment=central_crop"])
  result = input_pipeline_benchmark.benchmark(args)
  assert result["source"] == "contours, rendered" and result["images_per_second"] > 0


def test_study_model_on_host_devices_counts_the_flops_of_all_devices():
  small = ["--model=digits", "--res=16", "--batch=8", "--num_classes=10", "--mode=train",
           "--repeats=1", "--warmup=0", "--pause=0", "--peak_size=256", "--compile_only"]
  one, two = (throughput.benchmark(throughput.parse_args([*small, f"--host_devices={n}"]))
              for n in (1, 2))
  assert (one["host_devices"], two["host_devices"]) == (1, 2)
  assert one["num_params"] == two["num_params"] == 138_826
  assert two["flops_per_step"] == pytest.approx(one["flops_per_step"], rel=0.05)
