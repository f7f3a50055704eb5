"""The launch recipes: shell scripts that parse, and the ImageNet-21k preparation on a tiny folder."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import common
from vit_jax import data_sources

ROOT = pathlib.Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "launch"))
import prepare_imagenet21k  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize("script", ["launch/tpu_pod.sh", "launch/slurm_gpu.sbatch"])
def test_the_launch_scripts_parse(script):
  subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_the_pod_script_says_which_variable_is_missing():
  result = subprocess.run(["bash", str(ROOT / "launch/tpu_pod.sh"), "create"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
  assert result.returncode != 0 and "TPU_NAME" in result.stderr


def test_prepared_imagenet21k_reads_as_the_tfds_source_with_sorted_class_folders(tmp_path):
  for label, name in enumerate(["n001", "n002"]):
    (tmp_path / "images" / name).mkdir(parents=True)
    for i in range(3):
      image = Image.fromarray(np.full((5, 6, 3), 100 * label, np.uint8))
      image.save(tmp_path / "images" / name / f"{i}.JPEG")
  prepare_imagenet21k.build(str(tmp_path / "images"), str(tmp_path / "tfds"))
  data_config = common.get_config().dataset
  data_config.update(source="tfds", name="imagenet21k", data_dir=str(tmp_path / "tfds"), num_classes=2)
  source = data_sources.load(data_config, "train")
  examples = list(source.dataset.map(source.decode).as_numpy_iterator())
  assert source.num_examples == 6 and source.num_classes == 2
  for example in examples:  # JPEG round trip: dark images are class 0, bright ones class 1
    assert example["image"].shape == (5, 6, 3)
    assert abs(example["image"].mean() - 100 * example["label"]) < 5
