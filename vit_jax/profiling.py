"""A profiler trace of chosen train steps, written to the workdir for TensorBoard's profile plugin
(or Perfetto): `config.profile_steps = (first, last)`."""

from collections.abc import Sequence

from absl import logging
import jax


class StepTracer:
  """Starts `jax.profiler` before step `first` and stops it after step `last` (steps count from 1:
  step s is the s-th call of the train step). Every process traces its own devices."""

  def __init__(self, workdir: str, steps: Sequence[int]):
    if steps and (len(steps) != 2 or not 0 < steps[0] <= steps[1]):
      raise ValueError(f"config.profile_steps={tuple(steps)} must be () or (first, last) with "
                       "0 < first <= last.")
    self._workdir = workdir
    self._first, self._last = tuple(steps) or (0, -1)
    self._tracing = False

  def before_step(self, step: int) -> None:
    """Call with the number of the step about to run."""
    if step == self._first:
      jax.profiler.start_trace(self._workdir)
      self._tracing = True

  def after_step(self, step: int, outputs=None) -> None:
    """Call with the number of the step just dispatched and its outputs (waited for before stopping)."""
    if self._tracing and step >= self._last:
      jax.block_until_ready(outputs)
      self.stop()
      logging.info("Profiled steps %d..%d into %s/plugins/profile", self._first, self._last, self._workdir)

  def stop(self) -> None:
    if self._tracing:
      jax.profiler.stop_trace()
      self._tracing = False
