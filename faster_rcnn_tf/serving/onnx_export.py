"""Converting the detector to ONNX with tf2onnx (run by ONNX Runtime).

The model is the TFLite export's graph (`portable.LetterboxDetector`, frozen): one input
`images` uint8 [1, H, W, 3] (any H, W), letterboxed inside the graph into the export size,
and the outputs detection_boxes, detection_scores, detection_classes, num_detections
(see `tflite_export`). The class names and export settings are a JSON text under the
model's metadata_props key `METADATA_KEY` (`read_metadata`) and in the side file.

tf2onnx maps the graph's ops to ONNX ones (NonMaxSuppressionV4 -> NonMaxSuppression,
the NMS loops -> Loop, the gather crop -> Gather / Floor / Where); an op it cannot map
makes `convert` raise ConversionError naming it.
"""

import json

from faster_rcnn_tf.serving import portable

OPSET = 17
METADATA_KEY = 'faster_rcnn_tf'


class ConversionError(Exception):
  """tf2onnx could not convert the graph (one line naming the op)."""


def _tf2onnx():
  try:
    import tf2onnx
  except ImportError as e:
    raise ConversionError(f'ONNX export needs the tf2onnx package (pip install tf2onnx): '
                          f'{e}')
  return tf2onnx


def convert(detector, info, opset=OPSET):
  """A `portable.LetterboxDetector` -> serialized ONNX model bytes with `info` (a dict)
  as JSON metadata. Raises ConversionError when an op does not convert."""
  tf2onnx = _tf2onnx()
  module, _ = portable.freeze(detector.detect)
  signature = list(module.detect.input_signature)
  try:
    model_proto, _ = tf2onnx.convert.from_function(module.detect, input_signature=signature,
                                                   opset=opset)
  except Exception as e:  # tf2onnx raises assorted kinds; report its first line.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConversionError(f'tf2onnx {tf2onnx.__version__} (opset {opset}) cannot convert '
                          f'the model: {first}')
  unsupported = _unsupported_ops(model_proto)
  if unsupported:
    raise ConversionError(f'tf2onnx {tf2onnx.__version__} (opset {opset}) left TensorFlow '
                          f'ops it cannot convert: {", ".join(unsupported)}')
  entry = model_proto.metadata_props.add()
  entry.key = METADATA_KEY
  entry.value = json.dumps(info)
  return model_proto.SerializeToString()


def _nodes(graph):
  """Every node of an ONNX graph, the subgraphs' (Loop / If bodies) included."""
  for node in graph.node:
    yield node
    for attribute in node.attribute:
      if attribute.HasField('g'):
        yield from _nodes(attribute.g)
      for sub in attribute.graphs:
        yield from _nodes(sub)


def _unsupported_ops(model_proto):
  """Op types that no ONNX schema defines: TensorFlow ops tf2onnx left in the graph as
  they were (it logs them and carries on)."""
  import onnx
  return sorted({node.op_type for node in _nodes(model_proto.graph)
                 if not onnx.defs.has(node.op_type, node.domain or '')})


def read_metadata(model_bytes):
  """The info dict stored by `convert`, or None."""
  import onnx
  for entry in onnx.load_from_string(model_bytes).metadata_props:
    if entry.key == METADATA_KEY:
      return json.loads(entry.value)
  return None


def op_types(model_bytes):
  """Sorted ONNX op types of the model's nodes, subgraphs included."""
  import onnx
  return sorted({node.op_type for node in _nodes(onnx.load_from_string(model_bytes).graph)})
