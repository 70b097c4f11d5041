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

import dataclasses

from faster_rcnn_tf import batch_splitting
from faster_rcnn_tf import runs
from faster_rcnn_tf.layers import detection_generator
from faster_rcnn_tf.serving import export_module
from faster_rcnn_tf.serving import preprocess

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


def _load(source, checkpoint, config):
  """The model to export: runs.load_model of a run folder or a .keras file."""
  if not source:
    raise ExportError('--model_dir is required (a training run folder or a .keras file)')
  try:
    kind = runs.kind_of(source)
    if kind == 'saved_model':
      raise ExportError(f'--model_dir={source} is a SavedModel already; give the training '
                        'run folder (or .keras file) it came from')
    if kind == 'run':
      if config is None:
        config = runs.read_run_config(runs.find_run_folder(source) or source)
      # TF Serving runs XLA on CPUs only when told to: the backbone is exported plain.
      config = config.replace(execution=dataclasses.replace(config.execution,
                                                            compile_backbone=False))
    return runs.load_model(source, checkpoint, config=config)
  except runs.RunError as e:
    raise ExportError(f'--model_dir={source}: {e}' if source not in str(e) else str(e)
                      ) from None


def export_saved_model(source, export_base, *, checkpoint=None, config=None, version=None,
                       max_image_pixels=preprocess.DEFAULT_MAX_IMAGE_PIXELS):
  """Exports a trained model to export_base/N.

  Args:
    source: a training run folder (its run configuration and checkpoints) or a .keras
      file, loaded by `runs.load_model`.
    export_base: BASE, the model base path TF Serving is given.
    checkpoint: for a run folder, see `runs.resolve_checkpoint` (default: the latest).
    config: for a run folder, the RunConfig to build the model from (default: the
      run's own); export.py passes the run's with the command line's overrides
      (e.g. score_threshold, max_detections, detection_nms_method).
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
  choose_version(export_base, version)  # refuses a bad version before the model loads
  loaded = _load(source, checkpoint, config)
  number = choose_version(export_base, version)
  model = loaded.model
  module = loaded.detector(max_image_pixels=max_image_pixels)
  ckpt_path = loaded.checkpoint
  info = {
      'model_dir': os.path.abspath(loaded.path),
      'checkpoint': os.path.abspath(ckpt_path) if ckpt_path else os.path.abspath(loaded.path),
      'version': number,
      'class_names': list(loaded.class_names),
      'backbone': model.backbone_name,
      'min_size': loaded.min_size,
      'max_size': loaded.max_size,
      'score_threshold': float(model.detection_generator.score_threshold),
      'max_detections': int(model.detection_generator.max_detections),
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
