"""Stopping every worker of a multi-worker run together when one is told to stop.

A cluster scheduler preempts a host by sending its process SIGTERM. Under
--strategy=multi_worker the workers run every step in lockstep (the gradients are
all-reduced), so a worker that stops alone leaves the others waiting in the next
all-reduce for ever. `StopAgreement.agreed` is called by every worker at every step
boundary: it all-reduces a 0/1 flag ("I was asked to stop") across the workers, so all of
them see the same answer at the same step, save one checkpoint there (the chief in
--model_dir; every worker must take part in a save) and exit. Rerunning the same
commands resumes there: every worker restores the chief's newest intact checkpoint.

One small all-reduce per step is the price (the same mechanism as
tf.distribute.experimental.PreemptionCheckpointHandler, which agrees on the step through
TensorFlow's coordination service); single-process strategies pay nothing.
"""

import json
import os

import tensorflow as tf


def worker_index():
  """This process's task index in TF_CONFIG (0 without one)."""
  config = json.loads(os.environ.get('TF_CONFIG', '{}') or '{}')
  return int(config.get('task', {}).get('index', 0))


def worker_folder(model_dir):
  """The private folder of a non-chief worker's (unused) checkpoints: one per task index,
  so that restarts reuse it instead of leaving one folder per process."""
  return os.path.join(model_dir, f'.worker_{worker_index()}')


class StopAgreement:
  """Whether any worker was asked to stop, agreed by all workers at a step boundary.

  Args:
    strategy: the run's tf.distribute.Strategy; only a MultiWorkerMirroredStrategy
      communicates, any other answers with the local flag.
  """

  def __init__(self, strategy):
    self.strategy = strategy
    self.stopped = False
    self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if self._multi_worker:
      self._sum = tf.function(self._all_reduce_sum)

  def _all_reduce_sum(self, flag):
    # Each (local) replica contributes the flag, placed on its device; the sum runs over
    # every replica of every worker (like the losses' mean in the training step).
    per_replica = self.strategy.run(lambda value: tf.identity(value), args=(flag,))
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  def agreed(self, asked_locally):
    """True when this or any other worker was asked to stop (every worker must call this
    at the same step boundaries). Sets `stopped`."""
    if self._multi_worker:
      total = float(self._sum(tf.constant(1.0 if asked_locally else 0.0)))
      self.stopped = self.stopped or total > 0
    else:
      self.stopped = self.stopped or bool(asked_locally)
    return self.stopped
