"""Keep freed host memory in the process for reuse, instead of handing it back to the kernel (glibc).

XLA:CPU allocates each step's temporaries afresh (tens of MB for the studies' small models). glibc serves
every block above its mmap threshold (32 MB at most) with a fresh `mmap` and unmaps it when freed, so
each step faults its working set back in page by page, zero-filled by the kernel: a Fashion-MNIST
vit_tiny run took 7.7 million page faults and a third of its CPU time in the kernel. With `mmap` off for
malloc and a high trim threshold, freed blocks stay in the heap and the next step reuses them: on the
default two host devices the larger study models' train steps ran 1.1-1.45x faster on 2 cores, and on
one device the small ones' 1.5-2x (benchmarks/RESULTS.md). The arithmetic is the same program on the
same values, so results are bitwise unchanged. Blocks above the 64 MB heaps of glibc's per-thread
arenas are still mapped afresh (one device's temporaries for the larger study models; ViT-S/16's at
batch 8, ~250,000 page faults a step); one arena for all threads keeps those too, but it slowed the
small models by 30-45% and did not speed ViT-S/16's step up, so the per-thread arenas stay.

On unless `config.reuse_freed_host_memory` is False; CPU only (on GPU/TPU the host is not where the step
runs, and its input pipeline's large transient buffers are better returned), Linux glibc only. The
heap then keeps up to TRIM_THRESHOLD_BYTES of free memory beyond the process's peak use.
"""

import ctypes
import sys

from absl import logging
import ml_collections

from vit_jax import cpu_devices

# mallopt's parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30  # free memory at the top of the heap beyond this goes back to the kernel
TOP_PAD_BYTES = 64 << 20  # the heap grows by at least this, so small steps do not call `brk` each time


def reuse_freed_memory() -> bool:
  """Has malloc serve large blocks from its heap and keep freed ones there; False where it cannot."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # no dynamic libc, or one without mallopt
    return False
  settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES))
  return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def reuse_freed_memory_on_cpu() -> bool:
  """`reuse_freed_memory` unless JAX may run on a GPU or TPU; logs what it did."""
  if cpu_devices.accelerator_possible():
    return False
  reused = reuse_freed_memory()
  if reused:
    logging.info("CPU host memory: freed blocks kept for reuse (set "
                 "--config.reuse_freed_host_memory=False to return them to the kernel).")
  else:
    logging.info("CPU host memory: this C library's malloc cannot be tuned; left as it is.")
  return reused


def reuse_freed_memory_for(*configs: ml_collections.ConfigDict) -> bool:
  """`reuse_freed_memory_on_cpu` when every config asks for it (`reuse_freed_host_memory`, the default)."""
  if not configs or not all(config.get("reuse_freed_host_memory") for config in configs):
    return False
  return reuse_freed_memory_on_cpu()
