"""Stopping cleanly on a preemption notice (SIGTERM), with every host saving the same step.

Multi-host runs use JAX's preemption service, which `jax.distributed.initialize` starts: it catches
SIGTERM on any host, agrees with all hosts on a step a little ahead of the slowest one, and
`multihost_utils.reached_preemption_sync_point(step)` turns True at that step on every host at once.
That only works if nothing replaces its signal handler, so a Python handler is installed only for a
single-process run (or a multi-host one with the service switched off, which then needs an all-gather
every step to agree).
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


class PreemptionWatch:
  """`reached(step)` after every train step: True at the step where all processes should save and stop.

  Every process must call it at every step, starting from the same step.
  """

  def __init__(self):
    self.preempted = False
    self._uses_service = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
    self._signal = threading.Event()
    self._previous_handler = None
    if not self._uses_service:
      self._previous_handler = signal.signal(signal.SIGTERM, lambda *_: self._signal.set())
      if jax.process_count() > 1:
        logging.warning("jax_enable_preemption_service is off: preemption checks all-gather every step.")

  def reached(self, step: int) -> bool:
    if self._uses_service:
      reached = multihost_utils.reached_preemption_sync_point(step)
    elif jax.process_count() == 1:
      reached = self._signal.is_set()
    else:
      reached = bool(np.any(multihost_utils.process_allgather(np.array(self._signal.is_set()))))
    self.preempted = self.preempted or reached
    return reached

  def close(self) -> None:
    """Gives SIGTERM back to whoever held it before."""
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
