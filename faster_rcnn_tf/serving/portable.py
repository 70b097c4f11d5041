"""The detector in the form runtimes other than TensorFlow take (LiteRT / TFLite, ONNX).

Those runtimes have no CropAndResize kernel, cannot read TensorFlow variables and want
static shapes where they can get them, so the graph handed to their converters is traced
differently from the SavedModel's (same weights, same detections up to float rounding):

  * crop pooling takes the gather form (`roi_pooling.forced_impl('gather')`), which
    computes what CropAndResize computes with GATHER / FLOOR / SELECT ops;
  * one image per call (a static batch of 1: no sub-batches, the proposal and per-class
    NMS loops have a known trip count) and, for TFLite, a fixed canvas: the image is
    *letterboxed* inside the graph (`letterbox`) so that everything after the resize has
    static shapes;
  * every NMS, the proposals' and the detection head's per-class one, takes the 'kernel'
    method of `ops.nms` (`nms.forced_method`), whatever the model's execution settings
    say: TensorFlow's NonMaxSuppressionV4, which converts to TFLite's builtin
    NON_MAX_SUPPRESSION_V4 and ONNX's NonMaxSuppression, with its zero-area split, which
    makes TFLite's kernel give TensorFlow's result on boxes of zero area (see `ops.nms`);
  * the variables are frozen into constants (`freeze`).
"""

import contextlib
import re

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from faster_rcnn_tf import batch_norm_folding
from faster_rcnn_tf.ops import nms
from faster_rcnn_tf.ops import roi_pooling
from faster_rcnn_tf.serving import export_module as em
from faster_rcnn_tf.serving import preprocess

DEFAULT_SIZE = 320
NMS_METHOD = 'kernel'  # `ops.nms` method of every NMS in the portable form
# The outputs of the portable models: detect_images' without the class-name strings (they
# go to the model's metadata / a side file).
OUTPUT_NAMES = (em.DETECTION_BOXES, em.DETECTION_SCORES, em.DETECTION_CLASSES,
                em.NUM_DETECTIONS)


def parse_size(text, flag='--tflite_size'):
  """'S' -> (S, S); 'HxW' -> (H, W). Raises ValueError (one line naming `flag`)."""
  match = re.fullmatch(r'\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?', str(text))
  if not match:
    raise ValueError(f'{flag}={text}: expected S or HxW (positive integers), e.g. 320 or '
                     f'480x640')
  height = int(match.group(1))
  width = int(match.group(2) or match.group(1))
  if height < 32 or width < 32:
    raise ValueError(f'{flag}={text}: height and width must be at least 32')
  return height, width


def canvas_size(size, pad_multiple=preprocess.DEFAULT_PAD_MULTIPLE):
  """The model input (height, width) for a letterbox size: each rounded up to a multiple
  of pad_multiple (the padded sizes the model sees in training and in the SavedModel)."""
  m = max(int(pad_multiple or 1), 1)
  return tuple((int(s) + m - 1) // m * m for s in size)


def letterbox(images, size, pad_multiple=preprocess.DEFAULT_PAD_MULTIPLE):
  """Resizes an image to fit inside `size` (aspect kept) and pads it to the canvas.

  Args:
    images: uint8 [1, H, W, 3] (H, W >= 1, known only when run).
    size: (height, width) to fit in: scale = min(height / H, width / W).
    pad_multiple: the canvas is `canvas_size(size, pad_multiple)`.
  Returns:
    (float32 [1, Hc, Wc, 3] pixels 0..255 zero-padded at the bottom / right: static shape,
     int32 [1, 2] the resized (height, width) before padding).
  """
  canvas = canvas_size(size, pad_multiple)
  shape = tf.shape(images)
  h = tf.cast(shape[1], tf.float32)
  w = tf.cast(shape[2], tf.float32)
  scale = tf.minimum(size[0] / h, size[1] / w)
  resized = tf.maximum(tf.cast(tf.round(tf.stack([h, w]) * scale), tf.int32), 1)
  resized = tf.minimum(resized, tf.constant(size, tf.int32))
  # Resizing a float32 copy gives the same pixels as the SavedModel's uint8 resize
  # (preprocess.resize_image), and TFLite's RESIZE_BILINEAR keeps the input type.
  pixels = tf.image.resize(tf.cast(images, tf.float32), resized, method='bilinear')
  pixels = tf.pad(pixels, [[0, 0], [0, canvas[0] - resized[0]], [0, canvas[1] - resized[1]],
                           [0, 0]])
  return tf.reshape(pixels, [1, canvas[0], canvas[1], 3]), resized[tf.newaxis]


@contextlib.contextmanager
def portable_tracing(pad_multiple=preprocess.DEFAULT_PAD_MULTIPLE):
  """Within it, the model traces in its portable form: gather crop pooling, and every NMS
  by TensorFlow's kernel with the zero-area split (`nms.forced_method`; static box counts
  only). Its backbone is told the input size is a multiple of pad_multiple."""
  with roi_pooling.forced_impl('gather'), \
       nms.forced_method(NMS_METHOD, split_zero_area=True), \
       batch_norm_folding.input_size_multiple(pad_multiple):
    yield


class LetterboxDetector(tf.Module):
  """One uint8 image of any size -> detections, through a fixed letterbox canvas.

  Signature `detect` (exported as 'detect_images'):
    images  uint8 [1, H, W, 3] RGB, H, W >= 1
  returns (M = the model's max_detections):
    detection_boxes    float32 [1, M, 4]  yxyx normalized to the original image
    detection_scores   float32 [1, M]     high to low
    detection_classes  int32   [1, M]     1..K, 0 for padding
    num_detections     int32   [1]

  Args:
    model: a built `FasterRCNN` with its weights.
    class_names: the K class names.
    size: (height, width) the image is fitted into (`letterbox`).
    pad_multiple: the canvas is size rounded up to this.
    portable: trace the portable form (`portable_tracing`); False traces the model as the
      SavedModel does (CropAndResize), for comparisons at the same canvas.
  """

  def __init__(self, model, class_names, size, pad_multiple=preprocess.DEFAULT_PAD_MULTIPLE,
               portable=True):
    super().__init__(name='faster_rcnn_letterbox_detector')
    # DetectionModule checks the class names and holds the output post-processing.
    self._module = em.DetectionModule(model, class_names, min_size=min(size),
                                      max_size=max(size), pad_multiple=pad_multiple)
    self.model = model
    self.size = (int(size[0]), int(size[1]))
    self.canvas = canvas_size(self.size, pad_multiple)
    self._pad_multiple = int(pad_multiple)
    self._portable = bool(portable)

  @property
  def class_names(self):
    return self._module.class_names

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8,
                                              name=em.IMAGES)])
  def detect(self, images):
    """uint8 [1, H, W, 3] -> dict of `OUTPUT_NAMES` (see the class docstring)."""
    check = tf.debugging.assert_positive(
        tf.shape(images)[1:3], message='images: height and width must be at least 1')
    with tf.control_dependencies([check]):
      pixels, sizes = letterbox(images, self.size, self._pad_multiple)
    tracing = (portable_tracing(self._pad_multiple) if self._portable else
               batch_norm_folding.input_size_multiple(self._pad_multiple))
    with tracing:
      detections = self.model.detect(pixels, sizes)
    outputs = self._module.postprocess(detections, sizes)
    return {name: outputs[name] for name in OUTPUT_NAMES}


class _FrozenFunction(tf.Module):
  """A variable-free tf.Module around a frozen concrete function (see `freeze`)."""

  def __init__(self, frozen, input_signature, structured_outputs):
    super().__init__(name='frozen_detector')
    self._frozen = frozen
    self._structure = structured_outputs
    self.detect = tf.function(self._call, input_signature=input_signature)

  def _call(self, *args):
    flat = tf.nest.flatten(self._frozen(*args))
    return tf.nest.pack_sequence_as(self._structure, flat)


def freeze(function):
  """A tf.function with an input signature -> (tf.Module with no variables, its concrete
  `detect` function): the same computation with every variable a constant.

  The TFLite converter keeps Keras 3 variables as resource variables with no initial
  values when handed the live function (the model then reads uninitialized weights);
  freezing first gives it constants. The module keeps the output names (dict keys).
  """
  concrete = function.get_concrete_function()
  frozen = convert_to_constants.convert_variables_to_constants_v2(
      concrete, lower_control_flow=False)  # WHILE loops stay loops for the converters.
  module = _FrozenFunction(frozen, list(function.input_signature),
                           concrete.structured_outputs)
  return module, module.detect.get_concrete_function()
