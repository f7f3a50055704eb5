"""Published checkpoints by name, downloaded once into a local cache.

Names are those of the paper (`ViT-B_16` pretrained on ImageNet-21k, `ViT-B_16-imagenet2012` fine-tuned
at 384) and of AugReg (`augreg/ViT-B_16`, the recommended ImageNet-21k checkpoint of "How to train your
ViT?": the files vision_transformer's README recommends, and big_vision's `howto-i21k-*` names, which
add B/8). Any other string is taken as a path (local or `gs://`).
"""

import os

from absl import logging
from etils import epath

_BUCKET = "gs://vit_models"
_PAPER_MODELS = ("ViT-B_16", "ViT-B_32", "ViT-L_16", "ViT-L_32", "ViT-H_14", "R50+ViT-B_16")
_AUGREG = {
    "ViT-Ti_16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
    "ViT-S_16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
    "ViT-S_32": "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0",
    "ViT-B_16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
    "ViT-B_32": "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
    "ViT-B_8": "B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0",
    "ViT-L_16": "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0",
    "R+ViT-Ti_16": "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
    "R26+ViT-S_32": "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
    "R50+ViT-L_32": "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1",
}

CHECKPOINTS: dict[str, str] = {
    **{name: f"{_BUCKET}/imagenet21k/{name}.npz" for name in _PAPER_MODELS},
    **{f"{name}-imagenet2012": f"{_BUCKET}/imagenet21k+imagenet2012/{name}.npz"
       for name in _PAPER_MODELS if name != "ViT-H_14"},
    **{f"augreg/{name}": f"{_BUCKET}/augreg/{file}.npz" for name, file in _AUGREG.items()},
}


def default_cache_dir() -> epath.Path:
  return epath.Path(os.environ.get("VIT_JAX_CACHE", "~/.cache/vit_jax")).expanduser()


def resolve(name_or_path: str, cache_dir: str | epath.Path | None = None) -> epath.Path:
  """Local path of a checkpoint: a registered name is downloaded into the cache on first use."""
  if name_or_path not in CHECKPOINTS:
    return epath.Path(name_or_path)
  url = CHECKPOINTS[name_or_path]
  cache_dir = epath.Path(cache_dir) if cache_dir else default_cache_dir()
  local = cache_dir / url.split("://", 1)[-1].lstrip("/")
  if local.exists():
    return local
  local.parent.mkdir(parents=True, exist_ok=True)
  partial = local.parent / (local.name + ".partial")
  logging.info("Downloading %s to %s", url, local)
  try:
    epath.Path(url).copy(partial, overwrite=True)
  except Exception as e:  # Each storage backend raises its own errors; all mean "not fetched".
    raise OSError(
        f"Could not download checkpoint {name_or_path!r} from {url} ({type(e).__name__}: {e}). "
        f"Without network access, copy the file there by other means (e.g. `gsutil cp {url} {local}`) "
        "and run again.") from e
  partial.rename(local)
  return local
