"""Checkpoints: the latest k, plus the best by an evaluation metric.

TensorFlow writes a checkpoint's data files first and then atomically replaces the small
`checkpoint` state file that names the latest one, so a run killed mid-save leaves the
state file pointing at the previous complete checkpoint: a resume never trusts a
half-written one. Our own JSON side files are written to a temporary name and renamed.

Before resuming, every listed checkpoint is read back (training/checkpoint_check.py):
the run resumes from the newest intact one and damaged ones are moved to model_dir/damaged/.
A save that fails (a full disk, a read-only folder) removes its own partial files and
raises fileio.FolderWriteError naming the folder; the earlier checkpoints are untouched.
"""

import json
import os

import tensorflow as tf

from faster_rcnn_tf import fileio
from faster_rcnn_tf.fileio import atomic_write_text
from faster_rcnn_tf.training import checkpoint_check


class CheckpointKeeper:
  """Latest-k checkpoints under model_dir/ and the best one under model_dir/best/.

  Args:
    model_dir: the run's folder.
    checkpoint: a tf.train.Checkpoint holding at least `step` (int64 variable).
    max_to_keep: how many recent checkpoints to keep.
    warn: called with one-line warnings (damaged checkpoints set aside).
    restore_from: restore the newest intact checkpoint of this folder instead of
      model_dir's, without changing it (a multi-worker run's other workers restore the
      chief's checkpoints and save into their own folders).

  Raises checkpoint_check.DamagedCheckpointError when model_dir has checkpoints but none
  reads back whole.
  """

  def __init__(self, model_dir, checkpoint, max_to_keep=5, warn=print, restore_from=None):
    self.model_dir = model_dir
    self.restore_from = restore_from
    self.checkpoint = checkpoint
    # Before the managers read the state file: it then lists only intact checkpoints.
    checkpoint_check.prepare_resume(model_dir, warn=warn, max_to_keep=max_to_keep)
    self.latest = tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=max_to_keep,
                                             checkpoint_name='ckpt')
    self.best_dir = os.path.join(model_dir, 'best')
    self.best = tf.train.CheckpointManager(checkpoint, self.best_dir, max_to_keep=1,
                                           checkpoint_name='ckpt')

  def restore_latest(self):
    """Restores the newest intact checkpoint if any; returns its path or None."""
    if self.restore_from:
      path = checkpoint_check.newest_intact(self.restore_from)
    else:
      path = self.latest.latest_checkpoint
    if path:
      self.checkpoint.restore(path).expect_partial()
    return path

  def save(self, step):
    """Saves checkpoint model_dir/ckpt-<step>; returns its path.

    Raises fileio.FolderWriteError (one line naming the folder) when it cannot be
    written; its partial files are removed and the earlier checkpoints stay listed.
    """
    return self._save(self.latest, step)

  def _save(self, manager, step):
    try:
      return manager.save(checkpoint_number=int(step))
    except (tf.errors.OpError, OSError) as e:
      prefix = os.path.join(manager.directory, f'ckpt-{int(step)}')
      if prefix not in manager.checkpoints:  # never listed: nothing trusts its files
        checkpoint_check.remove_unfinished(prefix)
      text = str(getattr(e, 'message', None) or e)
      if isinstance(e, OSError):
        reason = fileio.os_error_reason(e)
      elif 'No space left on device' in text:
        reason = 'no space left on the device'
      elif 'Read-only file system' in text:
        reason = 'the file system is read-only'
      else:
        reason = (text.strip().splitlines() or [type(e).__name__])[0][:200]
      kept = manager.latest_checkpoint
      raise fileio.FolderWriteError(
          f'cannot write checkpoint {prefix} in folder {manager.directory}: {reason} '
          f'[{type(e).__name__}]; '
          + (f'the previous checkpoint {kept} is intact' if kept else
             'no earlier checkpoint')) from e

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
    self._save(self.best, step)
    atomic_write_text(os.path.join(self.best_dir, 'best.json'),
                      json.dumps({'metric': metric_name, 'value': float(value),
                                  'step': int(step)}))
    return True
