"""XLA_FLAGS of the suite and of the processes it starts: LLVM at -O0 (`xla_backend_optimization_level`).

The suite's tiny programs run for milliseconds but compile for seconds, and compiling is most of the
suite's time; -O0 compiles them ~40% faster and gives results within float tolerance. Runs compared
bitwise must share their flags, so a test that starts several processes gives them all the same.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(device_count: int | None = None) -> str:
  """-O0 with `device_count` fake CPU devices (None: no count, XLA's default of one, or what
  `vit_jax.cpu_devices` chooses)."""
  count = [] if device_count is None else [f"--xla_force_host_platform_device_count={device_count}"]
  return " ".join(count + [FAST_COMPILE])
