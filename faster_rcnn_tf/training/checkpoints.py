"""Checkpoints: the latest k, plus the best by an evaluation metric.

TensorFlow writes a checkpoint's data files first and then atomically replaces the small
`checkpoint` state file that names the latest one, so a run killed mid-save leaves the
state file pointing at the previous complete checkpoint: a resume never trusts a
half-written one. Our own JSON side files are written to a temporary name and renamed.
"""

import json
import os

import tensorflow as tf

from faster_rcnn_tf.fileio import atomic_write_text


class CheckpointKeeper:
  """Latest-k checkpoints under model_dir/ and the best one under model_dir/best/.

  Args:
    model_dir: the run's folder.
    checkpoint: a tf.train.Checkpoint holding at least `step` (int64 variable).
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, model_dir, checkpoint, max_to_keep=5):
    self.model_dir = model_dir
    self.checkpoint = checkpoint
    self.latest = tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=max_to_keep,
                                             checkpoint_name='ckpt')
    self.best_dir = os.path.join(model_dir, 'best')
    self.best = tf.train.CheckpointManager(checkpoint, self.best_dir, max_to_keep=1,
                                           checkpoint_name='ckpt')

  def restore_latest(self):
    """Restores the latest checkpoint if any; returns its path or None."""
    path = self.latest.latest_checkpoint
    if path:
      self.checkpoint.restore(path).expect_partial()
    return path

  def save(self, step):
    return self.latest.save(checkpoint_number=int(step))

  def best_value(self):
    path = os.path.join(self.best_dir, 'best.json')
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)['value']

  def maybe_save_best(self, step, metric_name, value):
    """Saves into best/ when `value` beats the stored best (higher is better)."""
    previous = self.best_value()
    if previous is not None and value <= previous:
      return False
    self.best.save(checkpoint_number=int(step))
    atomic_write_text(os.path.join(self.best_dir, 'best.json'),
                      json.dumps({'metric': metric_name, 'value': float(value),
                                  'step': int(step)}))
    return True
