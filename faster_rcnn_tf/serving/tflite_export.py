"""Converting the detector to a LiteRT (TFLite) model made of builtin operators only.

The model (`portable.LetterboxDetector`, frozen) has one signature, 'detect_images':
  input   images             uint8   [1, H, W, 3]  any H, W (the runtime resizes the input)
  output  detection_boxes    float32 [1, M, 4]     yxyx normalized to the original image
          detection_scores   float32 [1, M]
          detection_classes  int32   [1, M]        1..K, 0 for padding
          num_detections     int32   [1]
The image is letterboxed inside the graph into the export's fixed size (`--tflite_size`),
so the backbone, the RPN and the heads run at static shapes. The class names and the
export settings are a JSON text in the model's metadata (entry `METADATA_NAME`; read it
with `read_metadata`) and in a side file NAME.json.

The converter is given `TFLITE_BUILTINS` only (no select TF ops, no custom ops): a graph
needing anything else fails to convert instead of silently needing the Flex delegate.

Quantization (`QUANTIZATIONS`):
  none     float32 weights and arithmetic.
  float16  weights stored as float16 (half the file), dequantized at load: float32
           arithmetic.
  dynamic  dynamic-range quantization: int8 weights; convolutions and fully connected
           layers quantize their activations on the fly.
Full integer quantization (int8 activations through a representative dataset) is not
offered: the converter accepts the graph but also quantizes the box decoding and the
class scores to 8 bits, which destroys the detections (docs/deploy.md).
"""

import json

import tensorflow as tf

from faster_rcnn_tf.serving import export_module as em
from faster_rcnn_tf.serving import portable

QUANTIZATIONS = ('none', 'float16', 'dynamic')
METADATA_NAME = 'faster_rcnn_tf'
SIGNATURE = em.DETECT_IMAGES


class ConversionError(Exception):
  """The converter refused the graph (one line: the first reason it gave)."""


def _schema():
  """The flatbuffer schema module (LiteRT's when installed, else TensorFlow's copy)."""
  try:
    from ai_edge_litert import schema_py_generated as schema
  except ImportError:
    from tensorflow.lite.python import schema_py_generated as schema
  return schema


def convert(detector, info, quantization='none'):
  """A `portable.LetterboxDetector` -> the .tflite model bytes, with `info` (a dict) as
  JSON metadata.

  Raises ConversionError when an op has no builtin form, ValueError for a bad
  quantization.
  """
  if quantization not in QUANTIZATIONS:
    raise ValueError(f'--tflite_quantization={quantization}: choose from {QUANTIZATIONS}')
  module, concrete = portable.freeze(detector.detect)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantization in ('float16', 'dynamic'):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  try:
    data = converter.convert()
  except Exception as e:  # The converter raises its own ConverterError / ValueError kinds.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = next((line for line in lines if 'op' in line.lower()), lines[0] if lines
                  else type(e).__name__)
    raise ConversionError(f'the TFLite converter (builtin ops only) refused the model: '
                          f'{reason}')
  return _finish(data, info)


def _finish(data, info, name=METADATA_NAME):
  """The model bytes with json.dumps(info) as metadata entry `name`, and its signature
  called 'detect_images' (the converter names it 'serving_default'; 'detect_images' is
  the SavedModel signature with these outputs)."""
  import numpy as np
  schema = _schema()
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
  for signature in model.signatureDefs or []:
    signature.signatureKey = SIGNATURE
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(json.dumps(info).encode('utf-8'), np.uint8)
  model.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = name
  entry.buffer = len(model.buffers) - 1
  model.metadata = (model.metadata or []) + [entry]
  import flatbuffers
  builder = flatbuffers.Builder(1024)
  builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
  return bytes(builder.Output())


def read_metadata(data, name=METADATA_NAME):
  """The dict stored by `add_metadata` in model bytes, or None."""
  schema = _schema()
  model = schema.Model.GetRootAsModel(data, 0)
  for i in range(model.MetadataLength()):
    entry = model.Metadata(i)
    if entry.Name() == name.encode():
      raw = model.Buffers(entry.Buffer()).DataAsNumpy()
      return json.loads(bytes(raw).decode('utf-8'))
  return None


def operators(data):
  """Sorted list of (builtin operator name, custom code or None) the model uses.

  Read from the flatbuffer's operator codes: a select TF op appears as a custom code
  'FlexXXX', any other custom op by its own code.
  """
  schema = _schema()
  model = schema.Model.GetRootAsModel(data, 0)
  names = {value: key for key, value in vars(schema.BuiltinOperator).items()
           if not key.startswith('_')}
  found = set()
  for i in range(model.OperatorCodesLength()):
    code = model.OperatorCodes(i)
    # Codes past 127 live in BuiltinCode only; DeprecatedBuiltinCode holds at most 127.
    number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    custom = code.CustomCode()
    found.add((names.get(number, str(number)),
               custom.decode('utf-8') if custom is not None else None))
  return sorted(found, key=lambda item: (item[0], item[1] or ''))
