"""The pieces behind tests/test_faults.py, in process: checkpoint checks, the run lock,
one-line error reporting and atomic side files."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import cli
from faster_rcnn_tf import fileio
from faster_rcnn_tf.training import checkpoint_check
from faster_rcnn_tf.training import run_lock


def _save_three(folder):
  """Checkpoints ckpt-1..3 of one variable through a CheckpointManager; their values."""
  v = tf.Variable(np.zeros(5000, np.float32))
  ckpt = tf.train.Checkpoint(v=v)
  manager = tf.train.CheckpointManager(ckpt, str(folder), max_to_keep=3,
                                       checkpoint_name='ckpt')
  values = {}
  for step in (1, 2, 3):
    v.assign(np.arange(5000, dtype=np.float32) * step)
    manager.save(checkpoint_number=step)
    values[step] = v.numpy().copy()
  return ckpt, values


def test_problem_finds_truncation_bit_flips_and_missing_files(tmp_path):
  _save_three(tmp_path)
  data = lambda s: tmp_path / f'ckpt-{s}.data-00000-of-00001'
  assert all(checkpoint_check.problem(str(tmp_path / f'ckpt-{s}')) is None for s in (1, 2, 3))
  with open(data(3), 'r+b') as f:
    f.truncate(os.path.getsize(data(3)) - 100)
  assert 'cut short' in checkpoint_check.problem(str(tmp_path / 'ckpt-3'))
  raw = bytearray(data(2).read_bytes())
  raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the variable's values
  data(2).write_bytes(bytes(raw))
  assert checkpoint_check.problem(str(tmp_path / 'ckpt-2')) is not None
  os.remove(tmp_path / 'ckpt-1.index')
  assert 'ckpt-1.index is missing' in checkpoint_check.problem(str(tmp_path / 'ckpt-1'))


def test_prepare_resume_sets_damaged_aside_and_the_manager_keeps_them(tmp_path):
  ckpt, values = _save_three(tmp_path)
  damaged = tmp_path / 'ckpt-3.data-00000-of-00001'
  with open(damaged, 'r+b') as f:
    f.truncate(100)
  original = damaged.read_bytes()
  lines = []
  assert checkpoint_check.prepare_resume(str(tmp_path), warn=lines.append) == \
      str(tmp_path / 'ckpt-2')
  assert any('ckpt-3' in l and 'damaged' in l for l in lines)
  assert (tmp_path / 'damaged' / 'ckpt-3.data-00000-of-00001').read_bytes() == original
  manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=2,
                                       checkpoint_name='ckpt')
  assert manager.checkpoints == [str(tmp_path / 'ckpt-1'), str(tmp_path / 'ckpt-2')]
  ckpt.restore(manager.latest_checkpoint)
  np.testing.assert_array_equal(ckpt.v.numpy(), values[2])
  for step in (3, 4, 5):  # rotation deletes ckpt-1..3 as usual, never the damaged files
    manager.save(checkpoint_number=step)
  assert (tmp_path / 'damaged' / 'ckpt-3.data-00000-of-00001').read_bytes() == original
  assert not (tmp_path / 'ckpt-1.index').exists()


def test_require_intact_names_the_file_and_the_intact_ones(tmp_path):
  _save_three(tmp_path)
  os.remove(tmp_path / 'ckpt-3.index')
  assert checkpoint_check.latest_listed(str(tmp_path)) == str(tmp_path / 'ckpt-3')
  with pytest.raises(checkpoint_check.DamagedCheckpointError) as e:
    checkpoint_check.require_intact(str(tmp_path / 'ckpt-3'))
  message = str(e.value)
  assert 'ckpt-3.index is missing' in message and '\n' not in message
  assert str(tmp_path / 'ckpt-2') in message and str(tmp_path / 'ckpt-1') in message


def test_every_checkpoint_damaged_refuses_and_moves_nothing(tmp_path):
  _save_three(tmp_path)
  for step in (1, 2, 3):
    with open(tmp_path / f'ckpt-{step}.data-00000-of-00001', 'r+b') as f:
      f.truncate(10)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(checkpoint_check.DamagedCheckpointError, match='every checkpoint'):
    checkpoint_check.prepare_resume(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == before


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
  first = run_lock.RunLock(str(tmp_path)).acquire()
  info = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
  assert info['pid'] == os.getpid()
  with pytest.raises(run_lock.RunLockedError, match=f'process {os.getpid()} on host'):
    run_lock.RunLock(str(tmp_path)).acquire()
  first.release()
  assert not (tmp_path / run_lock.LOCK_FILE).exists()

  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (tmp_path / run_lock.LOCK_FILE).write_text(json.dumps({'pid': dead.pid, 'host': 'h'}))
  lines = []
  lock = run_lock.RunLock(str(tmp_path), warn=lines.append).acquire()
  assert len(lines) == 1 and f'process {dead.pid} on host h' in lines[0]
  assert json.loads((tmp_path / run_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
  lock.release()


def test_call_main_reports_machine_errors_in_one_line_and_bugs_with_a_traceback(capsys):
  def full_disk(argv):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/runs/x/flags.cfg')
  assert cli.call_main(full_disk, 'prog', ['prog']) == 1
  err = capsys.readouterr().err
  assert err == 'prog: error: /runs/x/flags.cfg: no space left on the device\n'

  def tf_full_disk(argv):
    raise tf.errors.ResourceExhaustedError(None, None, 'x.tempstate; No space left on device')
  assert cli.call_main(tf_full_disk, 'prog', ['prog']) == 1
  assert 'no space left on the device' in capsys.readouterr().err

  def bug(argv):
    raise ValueError('a bug')
  with pytest.raises(ValueError):
    cli.call_main(bug, 'prog', ['prog'])

  from absl import flags
  flags.FLAGS['traceback'].value = True
  try:
    with pytest.raises(OSError):
      cli.call_main(full_disk, 'prog', ['prog'])
  finally:
    flags.FLAGS['traceback'].value = False


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
  path = tmp_path / 'flags.cfg'
  fileio.atomic_write_text(path, 'old\n')

  def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, 'fsync', no_space)
  with pytest.raises(fileio.FolderWriteError, match=f'folder {tmp_path}: no space left'):
    fileio.atomic_write_text(path, 'new\n')
  assert path.read_text() == 'old\n'
  assert os.listdir(tmp_path) == ['flags.cfg']  # no temporary file left
