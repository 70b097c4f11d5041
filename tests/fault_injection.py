"""Runs a project script with an injected machine fault, for machines where a test may not
mount a small or read-only file system (mounting needs root with CAP_SYS_ADMIN).

    FRCNN_TEST_FAULT=full_disk|read_only FRCNN_TEST_FAULT_DIR=DIR \\
        python tests/fault_injection.py train.py --flags...

full_disk: every checkpoint save under DIR fails as TensorFlow's SaveV2 does on a full disk
(ResourceExhaustedError "No space left on device"), after leaving a partial temporary file.
read_only: opening a file under DIR for writing fails with EROFS, as on a read-only mount.
"""

import errno
import os
import runpy
import sys


def _inject_read_only(folder):
  real_open = os.open

  def guarded_open(path, flags, *args, **kwargs):
    writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    if writing and os.path.abspath(os.fspath(path)).startswith(folder):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_open(path, flags, *args, **kwargs)

  real_makedirs = os.makedirs

  def guarded_makedirs(path, *args, **kwargs):
    if os.path.abspath(os.fspath(path)).startswith(folder) and not os.path.isdir(path):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_makedirs(path, *args, **kwargs)

  os.open = guarded_open
  os.makedirs = guarded_makedirs


def _inject_full_disk(folder):
  import tensorflow as tf

  def failing_save(self, checkpoint_number=None, **kwargs):
    del kwargs
    if not os.path.abspath(self.directory).startswith(folder):
      raise AssertionError('unexpected checkpoint folder ' + self.directory)
    temp = os.path.join(self.directory, f'ckpt-{checkpoint_number}_temp')
    os.makedirs(temp, exist_ok=True)
    with open(os.path.join(temp, 'part-00000-of-00001.data-00000-of-00001'), 'wb') as f:
      f.write(b'\0' * 1000)
    raise tf.errors.ResourceExhaustedError(
        None, None, f'{temp}/part-00000-of-00001.data-00000-of-00001.tempstate1; '
        'No space left on device')

  tf.train.CheckpointManager.save = failing_save


def main():
  fault = os.environ['FRCNN_TEST_FAULT']
  folder = os.path.abspath(os.environ['FRCNN_TEST_FAULT_DIR'])
  if fault == 'read_only':
    _inject_read_only(folder)
  elif fault == 'full_disk':
    _inject_full_disk(folder)
  else:
    raise SystemExit(f'unknown FRCNN_TEST_FAULT {fault!r}')
  script = sys.argv[1]
  sys.argv = sys.argv[1:]
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
  main()
