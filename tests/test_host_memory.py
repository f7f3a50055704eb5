"""host_memory: freed blocks stay in the process (no page faults to reuse them), results unchanged."""

import json
import subprocess
import sys
import textwrap

import pytest

from configs import digits
from vit_jax import host_memory

_MB = 1 << 20
_PAGE = 4096

# Allocates, touches and frees a 64 MB block five times: the minor page faults of the last four, and a
# gradient's bytes computed before and after the switch (in a fresh process: mallopt is process-wide).
_PROBE = textwrap.dedent("""
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np
    from vit_jax import host_memory

    def grad():
      x = jnp.linspace(-1.0, 1.0, 4096).reshape(64, 64)
      return np.asarray(jax.jit(jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2)))(x)).tobytes().hex()

    before = grad()
    reused = host_memory.reuse_freed_memory() if sys.argv[1] == "reuse" else None
    def touch_and_free():  # a bytearray, not numpy, which asks for huge pages
      block = bytearray(64 << 20)
      block[::4096] = b"1" * (len(block) // 4096)

    touch_and_free()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
      touch_and_free()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
    print(json.dumps({"reused": reused, "faults": faults, "same_grad": grad() == before}))
""")


def _probe(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                       env={"JAX_PLATFORMS": "cpu", "PATH": "", "PYTHONPATH": ":".join(sys.path)})
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_blocks_are_reused_without_page_faults():
  pages = 64 * _MB // _PAGE
  default, reused = _probe("default"), _probe("reuse")
  assert default["faults"] >= 4 * pages * 0.9, default  # each block mapped afresh, faulted page by page
  assert reused["reused"] is True
  assert reused["faults"] < pages * 0.1, reused  # the freed block is served again from the heap
  assert reused["same_grad"] and default["same_grad"]  # the same bits either way


def test_off_when_the_config_says_so_or_an_accelerator_may_run(monkeypatch):
  config = digits.get_config()
  assert config.reuse_freed_host_memory is True  # the default
  config.reuse_freed_host_memory = False
  assert host_memory.reuse_freed_memory_for(config) is False
  assert host_memory.reuse_freed_memory_for(digits.get_config(), config) is False  # all must ask
  assert host_memory.reuse_freed_memory_for() is False
  monkeypatch.setenv("JAX_PLATFORMS", "tpu")
  assert host_memory.reuse_freed_memory_for(digits.get_config()) is False
