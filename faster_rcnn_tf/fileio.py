"""Small file helpers shared by training, evaluation and serving (no TensorFlow)."""

import errno
import os
import tempfile

_REASONS = {
    errno.ENOSPC: 'no space left on the device',
    errno.EDQUOT: 'disk quota exceeded',
    errno.EROFS: 'the file system is read-only',
    errno.EACCES: 'permission denied',
    errno.EPERM: 'operation not permitted',
}


class FolderWriteError(OSError):
  """A file that could not be written (full disk, read-only folder, no permission).

  str(error) is one line naming the file or folder and what failed; the scripts print it
  and exit with status 1.
  """


def os_error_reason(error):
  """A short phrase for an OSError (e.g. 'no space left on the device')."""
  return _REASONS.get(getattr(error, 'errno', None)) or getattr(error, 'strerror', None) \
      or str(error)


def _atomic_write(path, data, mode):
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=directory)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    with os.fdopen(fd, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    if tmp and os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and not isinstance(e, FolderWriteError):
      raise FolderWriteError(f'cannot write {path} in folder {directory}: '
                             f'{os_error_reason(e)}') from e
    raise


def atomic_write_text(path, text):
  """Writes text to path via a temporary file in the same directory and os.replace, so a
  reader never sees a half-written file; the folder is created if needed. A failed write
  leaves the previous file (if any) untouched and raises FolderWriteError."""
  _atomic_write(path, text, 'w')


def atomic_write_bytes(path, data):
  """atomic_write_text for bytes."""
  _atomic_write(path, data, 'wb')
