"""Finding and restoring train.py checkpoints, with clear errors when they do not fit.

train.py saves `tf.train.Checkpoint(model=..., optimizer=...)` through a CheckpointManager
as <model_dir>/ckpt-<step> (and <model_dir>/best/ckpt-<step>). Evaluation restores only
the model. A checkpoint of another class count or backbone raises `EvaluationError`
naming the checkpoint, what the model expected and what the checkpoint holds (its class
count from the cls_score layer, its backbone from its run's flags.cfg when there is one).
"""

import os
import re

import tensorflow as tf

from faster_rcnn_tf.evaluation.errors import EvaluationError

_CLS_BIAS = 'model/cls_score/bias/.ATTRIBUTES/VARIABLE_VALUE'
_ITERATIONS = 'optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'


def find_checkpoint(model_dir=None, checkpoint=None):
  """The checkpoint prefix to restore: --checkpoint (a prefix or a folder, also relative to
  --model_dir: ckpt-3000, best) or the latest in --model_dir. Raises EvaluationError
  naming the flag when there is none, and naming the files when the checkpoint does not
  read back whole (see training/checkpoint_check.py)."""
  path = _find_checkpoint(model_dir, checkpoint)
  from faster_rcnn_tf.training import checkpoint_check
  try:
    return checkpoint_check.require_intact(path)
  except checkpoint_check.DamagedCheckpointError as e:
    raise EvaluationError(str(e)) from None


def _find_checkpoint(model_dir, checkpoint):
  from faster_rcnn_tf.training import checkpoint_check
  if checkpoint and model_dir and not os.path.isabs(checkpoint):
    inside = os.path.join(model_dir, checkpoint)
    if not (os.path.isdir(checkpoint) or tf.io.gfile.exists(checkpoint + '.index')) and (
        os.path.isdir(inside) or tf.io.gfile.exists(inside + '.index')):
      checkpoint = inside
  if checkpoint:
    if os.path.isdir(checkpoint):
      path = checkpoint_check.latest_listed(checkpoint)
      if not path:
        raise EvaluationError(f'--checkpoint={checkpoint}: folder holds no checkpoint '
                              '(no "checkpoint" state file naming a ckpt-N)')
      return path
    if not (tf.io.gfile.exists(checkpoint + '.index') or
            tf.io.gfile.glob(checkpoint + '.data-*')):  # data alone: damaged, said below
      raise EvaluationError(f'--checkpoint={checkpoint}: no such checkpoint (expected '
                            f'{checkpoint}.index, e.g. --checkpoint=MODEL_DIR/ckpt-1000)')
    return checkpoint
  if not os.path.isdir(model_dir):
    raise EvaluationError(f'--model_dir={model_dir}: no such folder')
  path = checkpoint_check.latest_listed(model_dir)
  if not path:
    raise EvaluationError(f'--model_dir={model_dir}: no checkpoint in it (train.py writes '
                          '"checkpoint" and ckpt-N files there)')
  return path


def checkpoint_step(path):
  """The training step of a checkpoint: the optimizer's iterations, else the ckpt-N number."""
  try:
    reader = tf.train.load_checkpoint(path)
    if reader.has_tensor(_ITERATIONS):
      return int(reader.get_tensor(_ITERATIONS))
  except (tf.errors.OpError, ValueError):
    pass
  match = re.search(r'-(\d+)$', path)
  return int(match.group(1)) if match else None


def _run_backbone(path):
  """--backbone from the flags.cfg next to (or above) a checkpoint, or None."""
  folder = os.path.dirname(path)
  for candidate in (folder, os.path.dirname(folder)):
    cfg = os.path.join(candidate, 'flags.cfg')
    if os.path.isfile(cfg):
      with open(cfg, encoding='utf-8') as f:
        for line in f:
          if line.startswith('--backbone='):
            return line.strip().split('=', 1)[1]
  return None


def restore_model(model, path, class_names=None):
  """Restores `model` (a FasterRCNN) from checkpoint `path`.

  Raises EvaluationError when the checkpoint cannot be read, was trained for another
  number of classes, or its variables do not fit the model (another backbone or head).
  """
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as e:
    raise EvaluationError(f'checkpoint {path}: cannot be read ({e})') from None
  names = f' ({", ".join(class_names)})' if class_names else ''
  if reader.has_tensor(_CLS_BIAS):
    ckpt_classes = int(reader.get_variable_to_shape_map()[_CLS_BIAS][0]) - 1
    if ckpt_classes != model.num_classes:
      raise EvaluationError(
          f'checkpoint {path} was trained for {ckpt_classes} classes, but the evaluated '
          f'dataset has {model.num_classes}{names}: check --dataset / --classes (and the '
          'run\'s classes.json)')
  trained = _run_backbone(path)
  if trained and trained != model.backbone_name:
    hint = f'; its run was trained with --backbone={trained}'
  elif trained:
    hint = ('; the backbone matches its run\'s, so another model flag differs (e.g. '
            '--rpn_channels, --anchor_scales, --anchor_ratios)')
  else:
    hint = '; was it trained with another --backbone or other model flags?'

  checkpoint = tf.train.Checkpoint(model=model)
  try:
    status = checkpoint.restore(path).expect_partial()  # optimizer slots are not needed
    status.assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    detail = str(e).strip().splitlines()[0][:300]
    # The failed restore stays pending; TensorFlow would list every unrestored value
    # when it is garbage collected, burying the one-line error below.
    tf.get_logger().setLevel('ERROR')
    raise EvaluationError(
        f'checkpoint {path} does not fit the model built from the flags '
        f'(--backbone={model.backbone_name}, {model.num_classes} classes){hint}. '
        f'TensorFlow says: {detail}') from None
  return status
