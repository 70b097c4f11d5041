"""`DetectionModule`: the tf.Module exported as a SavedModel, with two signatures.

  serving_default   image_bytes  string [batch]                 JPEG or PNG, any size
  detect_images     images       uint8  [batch, height, width, 3] RGB

Both return (M = the model's max_detections, fixed at export):
  detection_boxes        float32 [batch, M, 4]  [ymin, xmin, ymax, xmax] normalized to
                                                the original image ([0, 1]); multiply by
                                                (height, width, height, width) for pixels
  detection_scores       float32 [batch, M]     sorted high to low
  detection_classes      int32   [batch, M]     1..K; 0 for padding
  detection_class_names  string  [batch, M]     '' for padding
  num_detections         int32   [batch]        valid rows come first

Preprocessing (decode, resize with min_size / max_size, pad), the model, the score
threshold, class names and box normalization all run inside the graph (see `preprocess`).
In serving_default an image that cannot be decoded (not JPEG/PNG, empty, truncated,
zero-sized, over max_pixels) gets num_detections = 0 and all-padding rows; the rest of the
batch is unaffected. In detect_images a zero height or width raises InvalidArgumentError.
"""

import tensorflow as tf

from faster_rcnn_tf import batch_norm_folding
from faster_rcnn_tf import inputs
from faster_rcnn_tf import box_scaling
from faster_rcnn_tf.serving import preprocess

SERVING_DEFAULT = 'serving_default'
DETECT_IMAGES = 'detect_images'
IMAGE_BYTES = 'image_bytes'
IMAGES = 'images'
DETECTION_BOXES = inputs.DETECTION_BOXES
DETECTION_SCORES = inputs.DETECTION_SCORES
DETECTION_CLASSES = inputs.DETECTION_CLASSES
DETECTION_CLASS_NAMES = 'detection_class_names'
NUM_DETECTIONS = inputs.NUM_DETECTIONS
OUTPUT_NAMES = (DETECTION_BOXES, DETECTION_SCORES, DETECTION_CLASSES, DETECTION_CLASS_NAMES,
                NUM_DETECTIONS)


class DetectionModule(tf.Module):
  """A FasterRCNN plus serving pre- and post-processing.

  Args:
    model: a built `FasterRCNN` with its weights (score threshold and max_detections are
      the model's own settings).
    class_names: the K class names, class id i is class_names[i - 1].
    min_size, max_size: resize targets (the training run's --min_size / --max_size).
    max_image_pixels: serving_default refuses larger encoded images (zero detections).
    pad_multiple: padded batch height and width are multiples of this (32, as in the
      training / evaluation pipeline).
  """

  def __init__(self, model, class_names, min_size, max_size,
               max_image_pixels=preprocess.DEFAULT_MAX_IMAGE_PIXELS,
               pad_multiple=preprocess.DEFAULT_PAD_MULTIPLE):
    super().__init__(name='faster_rcnn_detector')
    if len(class_names) != model.num_classes:
      raise ValueError(f'{len(class_names)} class names for a model with '
                       f'{model.num_classes} classes')
    self.model = model
    self._class_names = [str(c) for c in class_names]
    self._min_size = int(min_size)
    self._max_size = int(max_size)
    self._max_image_pixels = int(max_image_pixels)
    self._pad_multiple = int(pad_multiple)

  @property
  def class_names(self):
    """The K class names (class id i is class_names[i - 1])."""
    return list(self._class_names)

  @property
  def min_size(self):
    return self._min_size

  @property
  def max_size(self):
    return self._max_size

  @property
  def pad_multiple(self):
    return self._pad_multiple

  # ---- the pieces (usable in-process, eagerly or in a tf.function) ----

  def preprocess_bytes(self, image_bytes):
    """string [N] -> `preprocess.images_from_bytes` dict (decoded images only)."""
    return preprocess.images_from_bytes(image_bytes, self._min_size, self._max_size,
                                        self._max_image_pixels, self._pad_multiple)

  def preprocess_images(self, images):
    """uint8 [B, H, W, 3] -> `preprocess.images_from_uint8` dict."""
    return preprocess.images_from_uint8(images, self._min_size, self._max_size,
                                        self._pad_multiple)

  def postprocess(self, detections, image_sizes):
    """Model detections (resized-image pixels) -> the signature outputs.

    Args:
      detections: `FasterRCNN.detect` output dict for B images.
      image_sizes: int32 [B, 2], the resized sizes the model saw.
    Returns:
      dict of `OUTPUT_NAMES` for the B images (boxes normalized, class names added).
    """
    boxes = box_scaling.rescale_boxes(detections[DETECTION_BOXES], image_sizes,
                                  tf.ones_like(image_sizes))  # normalized, in [0, 1]
    classes = tf.cast(detections[DETECTION_CLASSES], tf.int32)
    table = tf.constant([''] + self._class_names, tf.string)
    return {
        DETECTION_BOXES: boxes,
        DETECTION_SCORES: tf.cast(detections[DETECTION_SCORES], tf.float32),
        DETECTION_CLASSES: classes,
        DETECTION_CLASS_NAMES: tf.gather(table, classes),
        NUM_DETECTIONS: tf.cast(detections[NUM_DETECTIONS], tf.int32),
    }

  def _detect(self, batch):
    """Preprocessed batch of B images (B may be 0) -> postprocessed outputs."""
    m = self.model.detection_generator.max_detections

    def run():
      # The preprocess pads to pad_multiple: lets the backbone skip padding copies.
      with batch_norm_folding.input_size_multiple(self._pad_multiple):
        detections = self.model.detect(batch['images'], batch['image_sizes'])
      return self.postprocess(detections, batch['image_sizes'])

    def empty():  # The backbone's convolutions fail on an empty batch.
      return {DETECTION_BOXES: tf.zeros([0, m, 4], tf.float32),
              DETECTION_SCORES: tf.zeros([0, m], tf.float32),
              DETECTION_CLASSES: tf.zeros([0, m], tf.int32),
              DETECTION_CLASS_NAMES: tf.fill([0, m], ''),
              NUM_DETECTIONS: tf.zeros([0], tf.int32)}

    return tf.cond(tf.shape(batch['images'])[0] > 0, run, empty)

  # ---- the exported functions ----

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)])
  def serve_image_bytes(self, image_bytes):
    """image_bytes string [N] -> outputs for N images (undecodable: zero detections)."""
    batch = self.preprocess_bytes(image_bytes)
    outputs = self._detect(batch)
    index = batch['index'][:, tf.newaxis]
    n = batch['batch_size']
    full = {}
    for name in (DETECTION_BOXES, DETECTION_SCORES, DETECTION_CLASSES, NUM_DETECTIONS):
      value = outputs[name]
      shape = tf.concat([[n], tf.shape(value)[1:]], axis=0)
      full[name] = tf.scatter_nd(index, value, shape)
    table = tf.constant([''] + self._class_names, tf.string)
    full[DETECTION_CLASS_NAMES] = tf.gather(table, full[DETECTION_CLASSES])
    m = self.model.detection_generator.max_detections
    full[DETECTION_BOXES] = tf.ensure_shape(full[DETECTION_BOXES], [None, m, 4])
    for name in (DETECTION_SCORES, DETECTION_CLASSES, DETECTION_CLASS_NAMES):
      full[name] = tf.ensure_shape(full[name], [None, m])
    full[NUM_DETECTIONS] = tf.ensure_shape(full[NUM_DETECTIONS], [None])
    return full

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES)])
  def serve_images(self, images):
    """images uint8 [B, H, W, 3] -> outputs for B images."""
    return self._detect(self.preprocess_images(images))

  def signatures(self):
    """{signature name: concrete function} for `tf.saved_model.save`."""
    return {SERVING_DEFAULT: self.serve_image_bytes.get_concrete_function(),
            DETECT_IMAGES: self.serve_images.get_concrete_function()}
