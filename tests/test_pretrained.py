"""Published checkpoint names resolve to a cached local copy; without network the error says what to do."""

import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax import pretrained


def test_registry_holds_paper_and_augreg_models():
  assert pretrained.CHECKPOINTS["ViT-B_16"] == "gs://vit_models/imagenet21k/ViT-B_16.npz"
  assert pretrained.CHECKPOINTS["augreg/ViT-B_16"].startswith("gs://vit_models/augreg/B_16-i21k-300ep")


def test_augreg_names_are_the_recommended_files():
  """vision_transformer's README and big_vision (`howto-i21k-L/16`, `howto-i21k-B/8`) recommend these."""
  augreg = "gs://vit_models/augreg/"
  assert pretrained.CHECKPOINTS["augreg/ViT-L_16"] == (
      augreg + "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz")
  assert pretrained.CHECKPOINTS["augreg/ViT-B_8"] == (
      augreg + "B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0.npz")


def test_a_path_that_is_no_registered_name_is_returned_as_is(tmp_path):
  assert str(pretrained.resolve(str(tmp_path / "mine.npz"))) == str(tmp_path / "mine.npz")


def test_registered_name_is_downloaded_once_into_the_cache(tmp_path, monkeypatch):
  bucket = tmp_path / "bucket"
  bucket.mkdir()
  np.savez(bucket / "ViT-Tiny.npz", w=np.arange(3.))
  monkeypatch.setitem(pretrained.CHECKPOINTS, "ViT-Tiny", str(bucket / "ViT-Tiny.npz"))
  local = pretrained.resolve("ViT-Tiny", cache_dir=tmp_path / "cache")
  assert str(local).startswith(str(tmp_path / "cache"))
  np.testing.assert_array_equal(checkpoint.load_npz(local)["w"], np.arange(3.))
  (bucket / "ViT-Tiny.npz").unlink()  # a second call must not fetch again
  assert pretrained.resolve("ViT-Tiny", cache_dir=tmp_path / "cache") == local


def test_failed_download_says_where_to_put_the_file(tmp_path, monkeypatch):
  monkeypatch.setitem(pretrained.CHECKPOINTS, "ViT-Gone", str(tmp_path / "nowhere" / "ViT-Gone.npz"))
  with pytest.raises(OSError, match=r"Could not download checkpoint 'ViT-Gone'.*copy the file there"):
    pretrained.resolve("ViT-Gone", cache_dir=tmp_path / "cache")
  assert not list((tmp_path / "cache").rglob("*.npz"))
