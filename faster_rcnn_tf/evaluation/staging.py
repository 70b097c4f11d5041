"""All-or-nothing output folders: files are written to a staging folder, then moved in.

    with staging.StagedOutput(out_dir) as stage:
      write(stage.path('metrics.json')) ...
      stage.commit()

The staging folder is a hidden sibling of `out_dir` (`.<name>.staging-*`, in the nearest
existing ancestor folder, so the final moves are renames on one file system). Leaving the
block without `commit()` (an exception) deletes it: `out_dir` is untouched. `commit()`:
  * `out_dir` missing: its parent folders are created and the staging folder is renamed to
    it in one step;
  * `out_dir` exists: each staged top-level entry replaces the entry of the same name
    (files with os.replace; a folder is swapped as a whole, so e.g. pr_curves/ never mixes
    curves of two runs); the entry named `last` (metrics.json) is moved last, so its
    presence marks a complete set. Other files already in `out_dir` are left alone.
"""

import os
import shutil
import tempfile


def _existing_ancestor(path):
  path = os.path.abspath(path)
  while not os.path.isdir(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def check_output_dir(out_dir):
  """Raises ValueError when out_dir cannot be an output folder (a file, or not writable)."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f'{out_dir} exists and is not a folder')
  ancestor = _existing_ancestor(out_dir)
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise ValueError(f'cannot write in {ancestor}')


class StagedOutput:
  """A staging folder for `out_dir`; see the module docstring."""

  def __init__(self, out_dir, last=None):
    self.out_dir = os.path.abspath(out_dir)
    self.last = last
    self.staging_dir = None
    self.committed = False

  def __enter__(self):
    check_output_dir(self.out_dir)
    base = os.path.basename(self.out_dir.rstrip(os.sep)) or 'output'
    self.staging_dir = tempfile.mkdtemp(prefix=f'.{base}.staging-',
                                        dir=_existing_ancestor(os.path.dirname(self.out_dir)))
    return self

  def path(self, *parts):
    """A path inside the staging folder (its parent folders are created)."""
    full = os.path.join(self.staging_dir, *parts)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    return full

  def commit(self):
    """Moves the staged files into out_dir (see the module docstring)."""
    if not os.path.exists(self.out_dir):
      os.makedirs(os.path.dirname(self.out_dir), exist_ok=True)
      os.rename(self.staging_dir, self.out_dir)
      self.committed = True
      return
    names = sorted(os.listdir(self.staging_dir), key=lambda n: (n == self.last, n))
    for name in names:
      src = os.path.join(self.staging_dir, name)
      dst = os.path.join(self.out_dir, name)
      if os.path.isdir(src):
        old = None
        if os.path.lexists(dst):
          old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=self.out_dir)
          os.rename(dst, os.path.join(old, name))
        os.rename(src, dst)
        if old:
          shutil.rmtree(old, ignore_errors=True)
      else:
        os.replace(src, dst)
    shutil.rmtree(self.staging_dir, ignore_errors=True)
    self.committed = True

  def __exit__(self, exc_type, exc, tb):
    if not self.committed and self.staging_dir and os.path.exists(self.staging_dir):
      shutil.rmtree(self.staging_dir, ignore_errors=True)
    return False
