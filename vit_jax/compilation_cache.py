"""JAX's persistent compilation cache: a restarted or resumed run loads its compiled steps from disk
instead of compiling them again (minutes for large models on a pod)."""

from etils import epath
import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

CACHE_FOLDER = "compilation_cache"


def enable(setting: str, workdir: str, min_compile_seconds: float = 1.0) -> str | None:
  """Caches compilations in `workdir/compilation_cache` ('workdir'), in the folder `setting` names (one
  that several runs share, local or gs://), or nowhere (''). Returns the folder."""
  if not setting:
    return None
  folder = str(epath.Path(workdir) / CACHE_FOLDER) if setting == "workdir" else setting
  if jax.config.jax_compilation_cache_dir != folder:
    jax_cache.reset_cache()  # JAX opens its cache once per process: the next compile reopens it here
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  return folder
