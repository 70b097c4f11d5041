"""Clients for the TFLite and ONNX exports, with `client`'s `detect` contract.

`detect(images)`: a list of N encoded images (JPEG / PNG bytes) -> `client.Outputs`
(numpy arrays: detection_boxes [N, M, 4] normalized, detection_scores, detection_classes,
detection_class_names, num_detections). Each image is decoded here (PIL, RGB) and run
alone (the models take one uint8 image of any size and letterbox it themselves); the
class names come from the model's metadata.

TFLite models run on the LiteRT interpreter (the ai-edge-litert package; TensorFlow's
tf.lite.Interpreter when it is not installed) with its default XNNPACK delegate; ONNX
models on ONNX Runtime's CPU provider.
"""

import io
import os

import numpy as np

from faster_rcnn_tf.serving import client
from faster_rcnn_tf.serving import export_module as em


def _decode(data):
  """uint8 [1, H, W, 3] RGB pixels of an encoded image (ServingError if undecodable)."""
  from PIL import Image
  try:
    with Image.open(io.BytesIO(bytes(data))) as image:
      pixels = np.asarray(image.convert('RGB'), np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise client.ServingError(f'cannot decode an image: {e}')
  return pixels[np.newaxis]


def _read_model(path, flag, read_metadata, metadata_name, what):
  """(model file bytes, the export info in its metadata); ServingError naming --flag
  when the file is missing, not a `what` or has no `metadata_name` entry."""
  if not os.path.isfile(path):
    raise client.ServingError(f'--{flag}={path}: no such file')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    info = read_metadata(data)
  except Exception as e:  # The parsers fail in assorted ways on a file of another kind.
    raise client.ServingError(f'--{flag}={path}: not {what} ({type(e).__name__})')
  if info is None:
    raise client.ServingError(f'--{flag}={path}: no {metadata_name} metadata (not written '
                              f'by export.py --format={flag})')
  return data, info


class _OneImageClient:
  """Shared `detect`: subclasses set self.class_names and define `run(pixels)`."""

  class_names = ()

  def run(self, pixels):
    """uint8 [1, H, W, 3] -> dict of the four numeric outputs for one image."""
    raise NotImplementedError

  def detect(self, images):
    if not images:
      raise client.ServingError('no images to send')
    rows = [self.run(_decode(data)) for data in images]
    raw = {name: np.concatenate([np.asarray(r[name]) for r in rows], axis=0)
           for name in (em.DETECTION_BOXES, em.DETECTION_SCORES, em.DETECTION_CLASSES,
                        em.NUM_DETECTIONS)}
    table = np.array([''] + list(self.class_names), dtype=object)
    classes = raw[em.DETECTION_CLASSES].astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= len(table)):
      raise client.ServingError(f'{self.description}: class ids outside 0..{len(table) - 1}')
    raw[em.DETECTION_CLASS_NAMES] = table[classes]
    return client.to_outputs(raw, len(images))


def tflite_interpreter(model, num_threads=None):
  """A LiteRT interpreter (XNNPACK delegate) for a .tflite file path or model bytes."""
  try:
    from ai_edge_litert import interpreter as litert
    interpreter_class = litert.Interpreter
  except ImportError:
    import tensorflow as tf
    interpreter_class = tf.lite.Interpreter
  if isinstance(model, (bytes, bytearray)):
    return interpreter_class(model_content=bytes(model), num_threads=num_threads)
  return interpreter_class(model_path=model, num_threads=num_threads)


class TFLiteClient(_OneImageClient):
  """Runs a .tflite export (its 'detect_images' signature) in this process."""

  def __init__(self, path, num_threads=None):
    from faster_rcnn_tf.serving import tflite_export
    _, info = _read_model(path, 'tflite', tflite_export.read_metadata,
                          tflite_export.METADATA_NAME, 'a TFLite model')
    self.info = info
    self.class_names = list(info['class_names'])
    try:
      self._interpreter = tflite_interpreter(path, num_threads)
      self._runner = self._interpreter.get_signature_runner(tflite_export.SIGNATURE)
    except (ValueError, RuntimeError) as e:
      raise client.ServingError(f'--tflite={path}: the interpreter refused it: {e}')
    self.description = f'TFLite {os.path.abspath(path)}'

  def run(self, pixels):
    try:
      return self._runner(**{em.IMAGES: pixels})
    except (ValueError, RuntimeError) as e:
      raise client.ServingError(f'{self.description}: {e}')


class OnnxClient(_OneImageClient):
  """Runs an .onnx export on ONNX Runtime (CPU) in this process."""

  def __init__(self, path, num_threads=None):
    from faster_rcnn_tf.serving import onnx_export
    try:
      import onnxruntime
    except ImportError as e:
      raise client.ServingError(f'--onnx needs the onnxruntime package: {e}')
    data, info = _read_model(path, 'onnx', onnx_export.read_metadata,
                             onnx_export.METADATA_KEY, 'an ONNX model')
    self.info = info
    self.class_names = list(info['class_names'])
    options = onnxruntime.SessionOptions()
    if num_threads:
      options.intra_op_num_threads = int(num_threads)
    try:
      self._session = onnxruntime.InferenceSession(data, options,
                                                   providers=['CPUExecutionProvider'])
    except Exception as e:  # ORT raises its own Fail / InvalidGraph kinds.
      raise client.ServingError(f'--onnx={path}: ONNX Runtime refused it: {e}')
    self._output_names = [o.name for o in self._session.get_outputs()]
    self.description = f'ONNX {os.path.abspath(path)}'

  def run(self, pixels):
    try:
      values = self._session.run(self._output_names, {em.IMAGES: pixels})
    except Exception as e:  # ORT raises its own RuntimeException kinds.
      raise client.ServingError(f'{self.description}: {e}')
    return dict(zip(self._output_names, values))
