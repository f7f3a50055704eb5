"""JAX's persistent compilation cache: a restarted or resumed run loads its compiled steps from disk
instead of compiling them again (minutes for large models on a pod)."""

from etils import epath
import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

CACHE_FOLDER = "compilation_cache"


def enable(setting: str, workdir: str, min_compile_seconds: float | None = None) -> str | None:
  """Caches compilations in `workdir/compilation_cache` ('workdir'), in the folder `setting` names (one
  that several runs share, local or gs://), or nowhere (''). Returns the folder.

  A run's own cache keeps what took at least a second to compile (JAX's default); a shared one keeps
  every compile (unless `min_compile_seconds` says otherwise): the runs of a study repeat the same small
  programs (initialisation, evaluation, few-shot features), each read back faster than it compiles.
  """
  if not setting:
    return None
  own = setting == "workdir"
  folder = str(epath.Path(workdir) / CACHE_FOLDER) if own else setting
  if min_compile_seconds is None:
    min_compile_seconds = 1.0 if own else 0.0
  if jax.config.jax_compilation_cache_dir != folder:
    jax_cache.reset_cache()  # JAX opens its cache once per process: the next compile reopens it here
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  return folder
