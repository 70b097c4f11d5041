"""export.py --format=tflite / onnx: a trained model -> one model file.

Writes into EXPORT_DIR (created if needed):
  faster_rcnn_HxW_QUANT.tflite   (--format=tflite; QUANT: --tflite_quantization)
  faster_rcnn_HxW.onnx           (--format=onnx)
and beside it the same name with .json: the export info (class names, sizes, thresholds,
input and outputs), which is also stored inside the model file (TFLite metadata / ONNX
metadata_props). An existing file is never overwritten; a failed conversion or write
leaves nothing (a folder that cannot be written raises `fileio.FolderWriteError`).

H x W is the letterbox size (`portable.letterbox`; the model input canvas is it rounded up
to a multiple of 32).
"""

import json
import os

from faster_rcnn_tf import fileio
from faster_rcnn_tf.serving import export_module as em
from faster_rcnn_tf.serving import exporter
from faster_rcnn_tf.serving import portable

FORMATS = ('saved_model', 'tflite', 'onnx')
# One error type for every export.py failure: a bad request or a failed conversion, one
# line, nothing written.
ExportError = exporter.ExportError


def file_name(fmt, size, quantization='none'):
  """The model file's name in the export folder."""
  if fmt == 'tflite':
    return f'faster_rcnn_{size[0]}x{size[1]}_{quantization}.tflite'
  return f'faster_rcnn_{size[0]}x{size[1]}.onnx'


def export_info(detector, fmt, quantization, checkpoint):
  """The dict stored in the model and the side file (detector: a
  `portable.LetterboxDetector`; checkpoint: the restored prefix or model file, or None)."""
  import tensorflow as tf
  model = detector.model
  info = {
      'format': fmt,
      'checkpoint': os.path.abspath(checkpoint) if checkpoint else None,
      'class_names': detector.class_names,
      'backbone': model.backbone_name,
      'letterbox_size': list(detector.size),
      'input_canvas': list(detector.canvas),
      'score_threshold': float(model.detection_generator.score_threshold),
      'max_detections': int(model.detection_generator.max_detections),
      'nms_method': portable.NMS_METHOD,
      'inputs': {em.IMAGES: 'uint8 [1, height, width, 3] RGB, any height and width'},
      'outputs': list(portable.OUTPUT_NAMES),
      'tensorflow_version': tf.__version__,
  }
  if fmt == 'tflite':
    info['quantization'] = quantization
    info['signature'] = em.DETECT_IMAGES
  return info


def convert_detector(detector, fmt, info, quantization='none'):
  """A `portable.LetterboxDetector` -> model file bytes (raises ExportError)."""
  if fmt == 'tflite':
    from faster_rcnn_tf.serving import tflite_export
    try:
      return tflite_export.convert(detector, info, quantization)
    except (tflite_export.ConversionError, ValueError) as e:
      raise ExportError(str(e))
  from faster_rcnn_tf.serving import onnx_export
  try:
    return onnx_export.convert(detector, info)
  except onnx_export.ConversionError as e:
    raise ExportError(str(e))


def export_run(fmt, source, export_dir, checkpoint=None, config=None,
               size=(portable.DEFAULT_SIZE, portable.DEFAULT_SIZE), quantization='none'):
  """Exports a trained model as EXPORT_DIR/`file_name` (+ .json).

  Args:
    fmt: 'tflite' or 'onnx'.
    source, checkpoint, config: as for `exporter.export_saved_model` (a training run
      folder or a .keras file; the checkpoint; the RunConfig to build the model from).
    export_dir: the folder the files go to.
    size: (height, width) letterbox size.
    quantization: TFLite only, one of `tflite_export.QUANTIZATIONS`.
  Returns:
    (model file path, info dict). Raises ExportError.
  """
  if fmt not in ('tflite', 'onnx'):
    raise ExportError(f'--format={fmt}: this export writes tflite or onnx')
  if not export_dir:
    raise ExportError('--export_dir is required')
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise ExportError(f'--export_dir={export_dir} exists and is not a folder')
  path = os.path.join(os.path.abspath(export_dir), file_name(fmt, size, quantization))
  if os.path.exists(path):
    raise ExportError(f'{path} already exists (exports are never overwritten)')
  loaded = exporter.load_source(source, checkpoint, config)
  detector = portable.LetterboxDetector(loaded.model, loaded.class_names, size)
  info = export_info(detector, fmt, quantization, loaded.checkpoint or loaded.path)
  data = convert_detector(detector, fmt, info, quantization)
  fileio.atomic_write_bytes(path, data)  # FolderWriteError: nothing written
  try:
    fileio.atomic_write_text(os.path.splitext(path)[0] + '.json', json.dumps(info, indent=1))
  except BaseException:
    os.remove(path)  # no model file without its side file
    raise
  return path, info
