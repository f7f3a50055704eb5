"""Training metrics: clu writers, a concise progress line, FLOPs of a compiled step, and MFU.

MFU needs the device's peak FLOP/s: known accelerators come from a table of published dense peaks;
elsewhere (CPUs) MFU is left out unless `config.peak_flops_per_device` gives one.
"""

import time
from typing import Any, TYPE_CHECKING

from absl import logging
import jax

if TYPE_CHECKING:
  from clu import metric_writers

# Dense peak FLOP/s per device (bf16; TPU v2/v3 per core), from the vendors' data sheets.
_PEAK_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12), ("V100", 125e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v4", 275e12), ("TPU v3", 61.5e12), ("TPU v2", 22.5e12),
)


def device_peak_flops(device: jax.Device | None = None) -> float | None:
  return peak_flops_of_kind((device or jax.devices()[0]).device_kind)


def peak_flops_of_kind(device_kind: str) -> float | None:
  """The data-sheet peak of a `jax.Device.device_kind` ("NVIDIA H100 80GB HBM3"), None if unknown."""
  return next((flops for name, flops in _PEAK_FLOPS if name.lower() in device_kind.lower()), None)


def compiled_flops(compiled: Any) -> float | None:
  """FLOPs of one call of a compiled function, from XLA's cost analysis (None if unavailable)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def create_writer(workdir: str) -> "metric_writers.MetricWriter":
  """TensorBoard events in the workdir (process 0 only); other processes log nothing twice."""
  # clu loads TensorFlow: imported here, so that the benchmarks can use this module's FLOPs and peaks
  # on machines without it.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0,
                                              asynchronous=True)


class Progress:
  """Images/s, ETA, MFU and the share of time spent waiting for input, over the steps since the last
  report: `report(step)` returns them.

  `step_flops` are the global FLOPs of one step (`vit_jax.flops.train_step_flops`), so MFU divides by
  the peak of all devices together. The loop adds the seconds it blocked on the input with
  `waited_for_input`.
  """

  def __init__(self, *, first_step: int, total_steps: int, global_batch_size: int,
               step_flops: float | None, peak_flops_per_device: float | None):
    self._total_steps = total_steps
    self._batch = global_batch_size
    self._step_flops = step_flops
    self._peak = peak_flops_per_device
    self._last_step, self._last_time = first_step, time.perf_counter()
    self._input_seconds = 0.

  def waited_for_input(self, seconds: float) -> None:
    self._input_seconds += seconds

  def mfu(self, steps: int, seconds: float) -> float | None:
    """Model FLOPs utilisation of `steps` steps in `seconds` on all devices (None if unknown)."""
    if not (self._step_flops and self._peak and steps > 0 and seconds > 0):
      return None
    return steps * self._step_flops / seconds / (self._peak * jax.device_count())

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps, seconds = step - self._last_step, max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    input_seconds, self._input_seconds = self._input_seconds, 0.
    if steps <= 0:
      return {}
    steps_per_second = steps / seconds
    out = {
        "images_per_second": steps_per_second * self._batch,
        "images_per_second_per_device": steps_per_second * self._batch / jax.device_count(),
        "eta_minutes": (self._total_steps - step) / steps_per_second / 60,
        "input_wait_fraction": input_seconds / seconds,
    }
    mfu = self.mfu(steps, seconds)
    if mfu is not None:
      out["mfu"] = mfu
    return out


def log_line(step: int, total_steps: int, metrics: dict[str, float]) -> None:
  parts = [f"step {step}/{total_steps}"]
  formats = (("loss", "loss {:.4f}"), ("learning_rate", "lr {:.2e}"), ("grad_norm", "|g| {:.3f}"),
             ("images_per_second", "{:.1f} img/s"), ("images_per_second_per_device", "({:.1f}/device)"),
             ("mfu", "MFU {:.1%}"), ("input_wait_fraction", "input wait {:.0%}"),
             ("eta_minutes", "ETA {:.1f} min"))
  parts += [fmt.format(metrics[key]) for key, fmt in formats if key in metrics]
  logging.info(" | ".join(parts))
