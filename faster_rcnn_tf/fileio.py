"""Small file helpers shared by training, evaluation and serving (no TensorFlow)."""

import os
import tempfile


def atomic_write_text(path, text):
  """Writes text to path via a temporary file in the same directory and os.replace, so a
  reader never sees a half-written file; the folder is created if needed."""
  atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_bytes(path, data):
  """`atomic_write_text` for bytes."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                             dir=directory)
  try:
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
