"""One writer per run folder: the lock file MODEL_DIR/train.lock.

The file holds {"pid", "host", "started", "command"} of the training process, and that
process keeps an exclusive flock on it while it runs. The kernel drops a flock when its
process dies in any way (SIGKILL, a crash, a machine reboot), so:
  * a second train.py on the same folder finds the flock taken and refuses, naming the
    process the file describes;
  * a lock file left by a dead process has no flock: it is taken over, with a warning
    naming the previous holder.
flock works on local file systems (and NFS v4); on a file system without it (a remote
gs:// folder) there is no lock and no check. Readers (evaluate, export, predict) do not
lock: they may read a folder that is being trained in.
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import sys

from faster_rcnn_tf import fileio

LOCK_FILE = 'train.lock'


class RunLockedError(Exception):
  """Another live process trains in the folder; the message is one line naming it."""


def _describe(info):
  if not isinstance(info, dict) or 'pid' not in info:
    return 'a process that left no details'
  text = f'process {info.get("pid")} on host {info.get("host", "?")}'
  if info.get('started'):
    text += f' (started {info["started"]})'
  return text


def _read(path):
  try:
    with open(path, encoding='utf-8') as f:
      return json.loads(f.read() or 'null')
  except (OSError, ValueError):
    return None


class RunLock:
  """The lock of one run folder, held by this process until `release` (or its exit).

  Args:
    model_dir: the run folder (created if needed).
    warn: called with a one-line warning when a stale lock is taken over.
  """

  def __init__(self, model_dir, warn=print):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_FILE)
    self.warn = warn
    self._fd = None

  def acquire(self):
    """Takes the lock; raises RunLockedError when a live process holds it."""
    if '://' in self.model_dir:
      return self  # a remote file system: no flock
    while True:
      try:
        os.makedirs(self.model_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise fileio.FolderWriteError(f'cannot create the lock file {self.path} in folder '
                                      f'{self.model_dir}: {fileio.os_error_reason(e)}') from e
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          holder = _describe(_read(self.path))
          raise RunLockedError(
              f'--model_dir={self.model_dir} is in use: {holder} is training there (lock '
              f'file {self.path}); stop it or choose another --model_dir') from None
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
          return self  # the file system has no locks
        raise
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)  # the holder removed the file meanwhile: lock the new one
    previous = _read(self.path)
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'started': datetime.datetime.now().isoformat(timespec='seconds'),
            'command': ' '.join(sys.argv)[:500]}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(info) + '\n').encode('utf-8'), 0)
      os.fsync(fd)
    except OSError as e:
      os.close(fd)
      if previous is None:
        try:
          os.remove(self.path)
        except OSError:
          pass
      raise fileio.FolderWriteError(f'cannot write the lock file {self.path} in folder '
                                    f'{self.model_dir}: {fileio.os_error_reason(e)}') from e
    self._fd = fd
    if previous is not None:
      self.warn(f'warning: took over the lock {self.path} left by {_describe(previous)}, '
                'which is no longer running')
    return self

  def release(self):
    """Removes the lock file and drops the lock (idempotent)."""
    if self._fd is None:
      return
    try:
      os.remove(self.path)
    except OSError:
      pass
    try:
      os.close(self._fd)  # closing the descriptor drops the flock
    except OSError:
      pass
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False
