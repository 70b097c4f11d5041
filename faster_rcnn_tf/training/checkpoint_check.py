"""Checking that a checkpoint reads back whole before it is trusted.

A checkpoint prefix P (e.g. RUN/ckpt-3000) is the files P.index (which tensors there are,
and where) and P.data-00000-of-0000N (their bytes). A copy cut short, a disk error or a
deleted file leaves a prefix that TensorFlow lists but cannot restore; restoring it fails
deep inside TensorFlow ("Read less bytes than requested"). Here a checkpoint counts as
intact when its index opens and every tensor it names reads back (TensorFlow checks each
tensor's CRC32C while reading, so flipped bits are found too).

Training (`prepare_resume`) checks every checkpoint the folder's `checkpoint` state file
lists, newest first, resumes from the newest intact one, and moves each damaged one's files
into RUN/damaged/ (never deleting them): left in place, the next save at the same step
would overwrite them, and tf.train.CheckpointManager's max_to_keep rotation would delete
them. The state file is then rewritten to list only the intact checkpoints. When none is
intact, nothing is moved and training refuses to start (it would otherwise start again
from step 0 unnoticed).

Evaluation, export and prediction (`require_intact`) only read: a damaged checkpoint is an
error naming its files, what is wrong, and the intact older checkpoints.
"""

import json
import os
import re

import tensorflow as tf

DAMAGED_DIR = 'damaged'
_STEP = re.compile(r'-(\d+)$')


class DamagedCheckpointError(ValueError):
  """A checkpoint that does not read back whole; the message is one line naming it."""


def _step(prefix):
  match = _STEP.search(prefix)
  return int(match.group(1)) if match else -1


def _first_line(error):
  text = str(getattr(error, 'message', None) or error).strip()
  return (text.splitlines()[0] if text else type(error).__name__)[:200]


def checkpoint_files(prefix):
  """The files of checkpoint `prefix` that exist: [PREFIX.index, PREFIX.data-*]."""
  files = tf.io.gfile.glob(prefix + '.data-*')
  if tf.io.gfile.exists(prefix + '.index'):
    files.insert(0, prefix + '.index')
  return sorted(files, key=lambda f: not f.endswith('.index'))


def problem(prefix):
  """What is wrong with checkpoint `prefix` (a short phrase), or None when it is intact.

  Reads every tensor the index names (one at a time, so memory stays at the largest one).
  """
  name = os.path.basename(prefix)
  data = tf.io.gfile.glob(prefix + '.data-*')
  if not tf.io.gfile.exists(prefix + '.index'):
    if data:
      return f'its index file {name}.index is missing (its data file is there)'
    return f'its files {name}.index and {name}.data-* are missing'
  try:
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
  except Exception as e:  # pylint: disable=broad-except  # any failure means unreadable
    return f'its index file {name}.index cannot be read ({_first_line(e)})'
  if not data:
    return f'its data file {name}.data-* is missing'
  for tensor in names:
    try:
      reader.get_tensor(tensor)
    except Exception as e:  # pylint: disable=broad-except
      sizes = ', '.join(f'{os.path.basename(f)} {tf.io.gfile.stat(f).length} bytes'
                        for f in data)
      return (f'tensor {tensor} cannot be read from its data file ({sizes}): '
              f'{_first_line(e)}; the file is probably cut short or corrupted')
  return None


def listed_checkpoints(folder):
  """The checkpoint prefixes of `folder`, newest (highest step) first.

  Those the `checkpoint` state file lists (what tf.train.CheckpointManager trusts: a save
  cut short never reaches it); without a readable state file, every ckpt-N prefix with an
  .index or data file.
  """
  state = None
  try:
    state = tf.train.get_checkpoint_state(folder)
  except Exception:  # pylint: disable=broad-except  # an unreadable state file: look at files
    state = None
  prefixes = []
  if state is not None:
    prefixes = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path and state.model_checkpoint_path not in prefixes:
      prefixes.append(state.model_checkpoint_path)
  else:
    for f in tf.io.gfile.glob(os.path.join(folder, '*-*.index')) + tf.io.gfile.glob(
        os.path.join(folder, '*-*.data-*')):
      prefix = re.sub(r'\.(index|data-\d+-of-\d+)$', '', f)
      if _STEP.search(prefix) and prefix not in prefixes:
        prefixes.append(prefix)
  return sorted(dict.fromkeys(prefixes), key=_step, reverse=True)


def latest_listed(folder):
  """The newest checkpoint `folder` lists, whether intact or not (None when none).

  Unlike tf.train.latest_checkpoint, a listed checkpoint whose .index was deleted is still
  returned, so that the caller can say what is wrong with it.
  """
  prefixes = listed_checkpoints(folder)
  return prefixes[0] if prefixes else None


def newest_intact(folder):
  """The newest checkpoint of `folder` that reads back whole, or None; changes nothing."""
  for prefix in listed_checkpoints(folder):
    if problem(prefix) is None:
      return prefix
  return None


def _intact_older(prefix, folder):
  older = [p for p in listed_checkpoints(folder) if _step(p) < _step(prefix) and p != prefix]
  return [p for p in older if problem(p) is None]


def require_intact(prefix, folder=None):
  """Raises DamagedCheckpointError unless checkpoint `prefix` reads back whole.

  The message names the checkpoint, what is wrong, and the intact older checkpoints of
  `folder` (default: the checkpoint's own folder) that could be used instead.
  """
  what = problem(prefix)
  if what is None:
    return prefix
  folder = folder or os.path.dirname(prefix)
  intact = _intact_older(prefix, folder)
  if intact:
    alternatives = ('intact older checkpoints: ' + ', '.join(intact) +
                    f' (e.g. --checkpoint={intact[0]})')
  else:
    alternatives = f'no intact older checkpoint in {folder}'
  raise DamagedCheckpointError(f'checkpoint {prefix} is damaged: {what}; {alternatives}')


def _quarantine(prefix, folder):
  """Moves the files of `prefix` into FOLDER/damaged/ (a free name); returns where.

  Moved before the state file is rewritten: a crash in between leaves the checkpoint
  listed without files (reported again next time), never unlisted files that the next
  save of the same step would overwrite.
  """
  target_dir = os.path.join(folder, DAMAGED_DIR)
  tf.io.gfile.makedirs(target_dir)
  name = os.path.basename(prefix)
  target = os.path.join(target_dir, name)
  n = 1
  while tf.io.gfile.glob(target + '.*'):
    n += 1
    target = os.path.join(target_dir, f'{name}.{n}')  # a second damage at the same step
  for f in checkpoint_files(prefix):
    tf.io.gfile.rename(f, target + f[len(prefix):])
  return target


def prepare_resume(folder, warn=print, max_to_keep=None):
  """Checks the checkpoints of run folder `folder` before training resumes.

  Every checkpoint the state file lists is read back (see `problem`). Damaged ones are
  moved to FOLDER/damaged/ with a warning naming them (`warn(line)`), and the state file
  is rewritten to list only the intact ones, so that tf.train.CheckpointManager neither
  overwrites nor deletes them.

  With `max_to_keep` (the CheckpointManager's), listed checkpoints older than the newest
  max_to_keep are not checked: the manager lists a new checkpoint before deleting the
  oldest one's files, so a process killed in between leaves the oldest listed with only
  some of its files. The manager deletes such ones at its next save, as it would have.

  Returns:
    the newest intact checkpoint prefix, or None when the folder has no checkpoint.
  Raises:
    DamagedCheckpointError when there are checkpoints but none is intact (nothing moved).
  """
  if not tf.io.gfile.isdir(folder):
    return None
  prefixes = listed_checkpoints(folder)
  if not prefixes:
    return None
  rotating = prefixes[max_to_keep:] if max_to_keep else []
  prefixes = prefixes[:max_to_keep] if max_to_keep else prefixes
  checked = [(p, problem(p)) for p in prefixes]
  intact = [p for p, what in checked if what is None]
  damaged = [(p, what) for p, what in checked if what is not None]
  if not damaged:
    return intact[0]
  if not intact:
    listing = '; '.join(f'{p}: {what}' for p, what in damaged)
    raise DamagedCheckpointError(
        f'every checkpoint in {folder} is damaged ({listing}); nothing was changed: move '
        f'them out of {folder} to train from step 0, or use another --model_dir')
  for prefix, what in damaged:
    if checkpoint_files(prefix):
      kept = f'its files were moved to {_quarantine(prefix, folder)}.* (kept, not deleted)'
    else:
      kept = 'it has no files left'
    warn(f'warning: checkpoint {prefix} is damaged: {what}; {kept}')
  _write_state(folder, list(reversed(intact + rotating)))
  warn(f'warning: resuming from {intact[0]}, the newest intact checkpoint')
  return intact[0]


def _write_state(folder, oldest_first):
  """Rewrites FOLDER/checkpoint (the state file tf.train.CheckpointManager reads) to list
  `oldest_first` (prefixes in that folder), keeping their save times; atomically (a
  temporary file renamed over it)."""
  try:
    state = tf.train.get_checkpoint_state(folder)
  except Exception:  # pylint: disable=broad-except  # unreadable: no save times to keep
    state = None
  stamps = {}
  if state is not None:
    stamps = {os.path.basename(p): t for p, t in zip(state.all_model_checkpoint_paths,
                                                     state.all_model_checkpoint_timestamps)}
  names = [os.path.basename(p) for p in oldest_first]
  lines = [f'model_checkpoint_path: {json.dumps(names[-1])}']
  lines += [f'all_model_checkpoint_paths: {json.dumps(n)}' for n in names]
  if all(n in stamps for n in names):
    lines += [f'all_model_checkpoint_timestamps: {stamps[n]!r}' for n in names]
  if state is not None and state.last_preserved_timestamp:
    lines.append(f'last_preserved_timestamp: {state.last_preserved_timestamp!r}')
  path = os.path.join(folder, 'checkpoint')
  tmp = path + '.tmp-rewrite'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  tf.io.gfile.rename(tmp, path, overwrite=True)


def remove_unfinished(prefix):
  """Deletes the files of checkpoint `prefix` whose save failed (it was never listed in the
  state file, so nothing trusts it), and TensorFlow's PREFIX_temp* staging files."""
  for f in checkpoint_files(prefix):
    try:
      tf.io.gfile.remove(f)
    except Exception:  # pylint: disable=broad-except  # best effort on a failing disk
      pass
  for tmp in tf.io.gfile.glob(prefix + '_temp*'):
    try:
      if tf.io.gfile.isdir(tmp):
        tf.io.gfile.rmtree(tmp)
      else:
        tf.io.gfile.remove(tmp)
    except Exception:  # pylint: disable=broad-except
      pass

