"""Every ```python block of README.md runs as written (offline: named checkpoints come from a cache).

Named checkpoints resolve into $VIT_JAX_CACHE, as the README says; here that cache holds all-zero
weights of the right shapes, since only that the code runs is at stake (the fixtures' tests check
the numbers).
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import pretrained

REPO = pathlib.Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# Checkpoint name -> (model, classes, resolution) of the all-zero stand-ins.
_CHECKPOINTS = {"augreg/ViT-Ti_16": ("ViT-Ti_16", 21843, 224)}


def _snippets() -> list[tuple[int, str]]:
  text = (REPO / "README.md").read_text()
  return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def _zero_checkpoint(path: pathlib.Path, model_name: str, num_classes: int, size: int) -> None:
  model = models.create(model_configs.get_model_config(model_name), num_classes=num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             train=False)["params"])
  path.parent.mkdir(parents=True, exist_ok=True)
  checkpoint.save_npz(path, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  root = tmp_path_factory.mktemp("vit_jax_cache")
  for name, (model_name, num_classes, size) in _CHECKPOINTS.items():
    _zero_checkpoint(root / pretrained.CHECKPOINTS[name].split("://", 1)[1], model_name, num_classes,
                     size)
  return root


def test_readme_has_the_python_snippets_this_file_runs():
  assert len(_snippets()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("line,code", _snippets(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_snippet_runs(line, code, cache, tmp_path, monkeypatch):
  monkeypatch.setenv("VIT_JAX_CACHE", str(cache))
  monkeypatch.chdir(tmp_path)  # snippets write files (out/, rollout.png) where they run
  (tmp_path / "tests").symlink_to(REPO / "tests")  # and read the fixtures by their relative path
  exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme"})  # pylint: disable=exec-used
