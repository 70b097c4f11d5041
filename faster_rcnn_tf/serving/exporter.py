"""Writing a SavedModel version folder BASE/N (TF Serving's model base path layout).

TF Serving watches BASE and serves the highest numeric sub-folder. `export_saved_model`
writes into a temporary folder *beside* BASE (same file system; the name is not a number
and not inside BASE, so TF Serving never sees it) and renames it to BASE/N at the very
end: a crash or an error leaves no half-written version. N defaults to one more than the
highest existing version; an existing version is never overwritten.

BASE/N holds the SavedModel (saved_model.pb, variables/, assets/, fingerprint.pb) plus
export_info.json (what was exported: checkpoint, class names, sizes, thresholds, and the
choices made for the exporting machine's kind: the detection head's NMS method and the
sub-batches each request batch runs as).
"""

import json
import os
import shutil
import tempfile

from faster_rcnn_tf import batch_splitting
from faster_rcnn_tf import config_flags
from faster_rcnn_tf.layers import detection_generator
from faster_rcnn_tf.serving import export_module
from faster_rcnn_tf.serving import preprocess
from faster_rcnn_tf.serving import run_dir

INFO_FILE = 'export_info.json'


class ExportError(Exception):
  """A bad export request (run folder, checkpoint, version, export folder): one line."""


def existing_versions(base):
  """Sorted int version numbers of the numeric sub-folders of base ([] if none)."""
  if not os.path.isdir(base):
    return []
  return sorted(int(name) for name in os.listdir(base)
                if name.isdigit() and os.path.isdir(os.path.join(base, name)))


def next_version(base):
  """One more than the highest existing version of base (1 for a new base)."""
  versions = existing_versions(base)
  return versions[-1] + 1 if versions else 1


def choose_version(base, version=None):
  """The version to write: `version` if given (must be new and positive), else the next."""
  if os.path.exists(base) and not os.path.isdir(base):
    raise ExportError(f'--export_dir={base} exists and is not a folder')
  if version is None:
    return next_version(base)
  if int(version) <= 0:
    raise ExportError(f'--version must be a positive integer, got {version}')
  if os.path.exists(os.path.join(base, str(int(version)))):
    raise ExportError(f'--version={version}: {os.path.join(base, str(int(version)))} already '
                      f'exists (versions are never overwritten; next free: '
                      f'{next_version(base)})')
  return int(version)


def export_saved_model(model_dir, export_base, flag_values, checkpoint=None, version=None,
                       max_image_pixels=preprocess.DEFAULT_MAX_IMAGE_PIXELS):
  """Exports a training run's checkpoint to export_base/N.

  Args:
    model_dir: the run folder (flags.cfg, classes.json, checkpoints).
    export_base: BASE, the model base path TF Serving is given.
    flag_values: parsed flags with the run's model and data flags (see
      `run_dir.flagfile_args`); --min_size, --max_size, --score_threshold and
      --max_detections are read from here.
    checkpoint: see `run_dir.resolve_checkpoint` (default: the latest).
    version: N, or None for the next free version.
    max_image_pixels: serving_default refuses larger encoded images.
  Returns:
    (path of the version folder, export info dict). Raises ExportError on a bad request
    (nothing written).
  """
  import tensorflow as tf
  if not export_base:
    raise ExportError('--export_dir is required')
  export_base = os.path.abspath(export_base)
  try:
    run_dir.check_model_dir(model_dir)
    run_dir.read_class_names(model_dir)
    run_dir.resolve_checkpoint(model_dir, checkpoint)
  except run_dir.RunDirError as e:
    raise ExportError(str(e))
  number = choose_version(export_base, version)
  try:
    model, class_names, ckpt_path = run_dir.restore_model(model_dir, flag_values, checkpoint)
  except run_dir.RunDirError as e:
    raise ExportError(str(e))
  module = export_module.DetectionModule(
      model, class_names, config_flags.inference_min_size(flag_values), flag_values.max_size,
      max_image_pixels=max_image_pixels)
  info = {
      'model_dir': os.path.abspath(model_dir),
      'checkpoint': os.path.abspath(ckpt_path),
      'version': number,
      'class_names': class_names,
      'backbone': flag_values.backbone,
      'min_size': config_flags.inference_min_size(flag_values),
      'max_size': flag_values.max_size,
      'score_threshold': flag_values.score_threshold,
      'max_detections': flag_values.max_detections,
      'max_image_pixels': int(max_image_pixels),
      'pad_multiple': preprocess.DEFAULT_PAD_MULTIPLE,
      # 'auto' settings are decided when the graph is traced, i.e. for this machine:
      'detection_nms_method': detection_generator.resolve_nms_method(
          model.detection_generator.nms_method),
      'inference_splits': batch_splitting.resolve_splits(model.inference_splits),
      'signatures': {
          export_module.SERVING_DEFAULT: {export_module.IMAGE_BYTES: 'string [batch]'},
          export_module.DETECT_IMAGES: {export_module.IMAGES: 'uint8 [batch, height, width, 3]'},
      },
      'outputs': list(export_module.OUTPUT_NAMES),
      'tensorflow_version': tf.__version__,
  }
  parent = os.path.dirname(export_base)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(export_base)}.tmp-export-', dir=parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from a serving user.
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    with open(os.path.join(tmp, INFO_FILE), 'w') as f:
      json.dump(info, f, indent=1)
    os.makedirs(export_base, exist_ok=True)
    final = os.path.join(export_base, str(number))
    if os.path.exists(final):  # Another export took the number meanwhile.
      raise ExportError(f'{final} appeared during the export; nothing written')
    os.rename(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final, info
