"""Reading a training run folder (train.py's --model_dir) and restoring its model.

A run folder holds:
  flags.cfg      the resolved flags of the run (absl flagfile, one --name=value a line)
  classes.json   {"class_names": [...]}: class id i (1-based) is class_names[i - 1]
  checkpoint, ckpt-N.*   tf.train.Checkpoint(model=..., optimizer=...) files
  best/          optionally the best checkpoint by evaluation

export.py and predict.py take the model structure (backbone, anchors, sizes, ...) from
flags.cfg: `flagfile_args` picks the lines of the flags defined in `config_flags` and the
scripts parse them *before* their own command line, so the command line overrides them
(e.g. --score_threshold=0.3 --max_detections=50 at export).
"""

import glob
import json
import os
import sys

from absl import flags

FLAGS_FILE = 'flags.cfg'
CLASSES_FILE = 'classes.json'
CONFIG_FLAGS_MODULE = 'faster_rcnn_tf.config_flags'


class RunDirError(ValueError):
  """A missing or unusable run folder or checkpoint; the message is one readable line."""


def peek_flag(argv, name):
  """The value of --name=V or --name V in an argv list (the last one wins), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def config_flag_names(flag_values=flags.FLAGS):
  """Names of the flags defined by `config_flags` (model and data flags) in flag_values."""
  return {f.name for f in flag_values.flags_by_module_dict().get(CONFIG_FLAGS_MODULE, [])}


def flagfile_args(path, flag_values=flags.FLAGS):
  """The '--name=value' / '--[no]name' lines of a flags.cfg that set `config_flags` flags.

  Other lines (train.py's own flags, absl's logging flags, ...) are left out, so the
  result can be parsed by a script that does not define them.
  """
  names = config_flag_names(flag_values)
  kept = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line.startswith('--'):
        continue
      name = line[2:].split('=', 1)[0]
      if name in names or (name.startswith('no') and '=' not in line and name[2:] in names):
        kept.append(line)
  return kept


def check_model_dir(model_dir):
  """Raises RunDirError unless model_dir is a folder with flags.cfg and classes.json."""
  if not model_dir:
    raise RunDirError('--model_dir is required')
  if not os.path.isdir(model_dir):
    raise RunDirError(f'--model_dir={model_dir}: folder does not exist')
  for name in (FLAGS_FILE, CLASSES_FILE):
    if not os.path.isfile(os.path.join(model_dir, name)):
      raise RunDirError(f'--model_dir={model_dir}: no {name} (not a train.py run folder)')


def read_class_names(model_dir):
  """The class names (list of str, K >= 1) from model_dir/classes.json."""
  path = os.path.join(model_dir, CLASSES_FILE)
  try:
    with open(path) as f:
      names = json.load(f)['class_names']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise RunDirError(f'{path}: cannot read class names ({type(e).__name__}: {e})')
  if not isinstance(names, list) or not names:
    raise RunDirError(f'{path}: "class_names" must be a non-empty list')
  return [str(n) for n in names]


def resolve_checkpoint(model_dir, checkpoint=None):
  """The checkpoint prefix to restore.

  Args:
    model_dir: the run folder.
    checkpoint: None (the latest in model_dir), a folder (its latest, e.g. model_dir/best)
      or a checkpoint prefix (e.g. model_dir/ckpt-6, or just ckpt-6 relative to model_dir).
  Returns:
    str prefix (PREFIX.index exists). Raises RunDirError naming the files when the
    checkpoint does not read back whole (see training/checkpoint_check.py).
  """
  from faster_rcnn_tf.training import checkpoint_check
  path = _resolve_checkpoint(model_dir, checkpoint)
  try:
    return checkpoint_check.require_intact(path)
  except checkpoint_check.DamagedCheckpointError as e:
    raise RunDirError(str(e)) from None


def _resolve_checkpoint(model_dir, checkpoint):
  from faster_rcnn_tf.training import checkpoint_check
  if not checkpoint:
    path = checkpoint_check.latest_listed(model_dir)
    if not path:
      raise RunDirError(f'--model_dir={model_dir}: no checkpoint in the folder')
    return path
  candidates = [checkpoint]
  if not os.path.isabs(checkpoint):
    candidates.append(os.path.join(model_dir, checkpoint))
  for candidate in candidates:
    if os.path.isdir(candidate):
      path = checkpoint_check.latest_listed(candidate)
      if path:
        return path
      raise RunDirError(f'--checkpoint={checkpoint}: no checkpoint in folder {candidate}')
    if os.path.isfile(candidate + '.index') or glob.glob(glob.escape(candidate) + '.data-*'):
      return candidate  # data files alone: a damaged checkpoint, reported by the caller
  raise RunDirError(f'--checkpoint={checkpoint}: not a checkpoint (no {checkpoint}.index, '
                    f'also looked in {model_dir})')


def build_model(flag_values, num_classes):
  """A FasterRCNN from parsed model flags, with no pretrained weights loaded.

  (--backbone_weights is ignored: every weight comes from the checkpoint; so is
  --compile_backbone: TF Serving runs XLA on CPUs only when told to.) Sets Keras' global
  dtype policy to --precision first.
  """
  from faster_rcnn_tf import config_flags
  from faster_rcnn_tf.model import FasterRCNN
  config_flags.apply_precision(flag_values)
  kwargs = config_flags.model_kwargs(flag_values, num_classes)
  kwargs['backbone_weights'] = None
  kwargs['compile_backbone'] = False
  return FasterRCNN(**kwargs)


def restore_model(model_dir, flag_values, checkpoint=None):
  """Builds the run's model and restores its weights.

  Args:
    model_dir: the run folder (checked with `check_model_dir`).
    flag_values: parsed flags holding the run's model flags (see `flagfile_args`).
    checkpoint: see `resolve_checkpoint`.
  Returns:
    (FasterRCNN, class names list, checkpoint prefix). Raises RunDirError.
  """
  import tensorflow as tf
  check_model_dir(model_dir)
  class_names = read_class_names(model_dir)
  path = resolve_checkpoint(model_dir, checkpoint)
  try:
    model = build_model(flag_values, len(class_names))
  except ValueError as e:
    raise RunDirError(f'cannot build the model from {model_dir}/{FLAGS_FILE}: {e}')
  try:
    status = tf.train.Checkpoint(model=model).restore(path)
    status.assert_existing_objects_matched()
    status.expect_partial()  # The optimizer's slots are not needed.
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise RunDirError(f'checkpoint {path} does not fit the model of {model_dir} '
                      f'({len(class_names)} classes, flags.cfg): {first}')
  return model, class_names, path


def parse_argv_with_run_config(argv, flag_values, prog):
  """absl `flags_parser` for app.run: MODEL_DIR/flags.cfg's model flags, then argv.

  When argv has --model_dir=DIR and DIR/flags.cfg exists, its `config_flags` lines are
  parsed first, so the command line (and any --flagfile on it) overrides them. A flag
  error prints one line and exits with status 2. Returns the positional arguments
  (argv[0] first), as absl's parser does.
  """
  model_dir = peek_flag(argv[1:], 'model_dir')
  defaults = []
  cfg = os.path.join(model_dir, FLAGS_FILE) if model_dir else None
  if cfg and os.path.isfile(cfg):
    defaults = flagfile_args(cfg, flag_values)
  try:
    return flag_values([argv[0], *defaults, *argv[1:]])
  except flags.Error as e:
    print(f'{prog}: error: {e}', file=sys.stderr)
    sys.exit(2)
