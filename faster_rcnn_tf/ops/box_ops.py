"""Box operations: IoU, delta encode/decode, clipping, and format conversions.

THE PROJECT'S BOX CONVENTION (used everywhere inside the model and the data pipeline):

    [ymin, xmin, ymax, xmax], float32, continuous pixel coordinates of the image the
    model sees (after resizing), origin at the top-left corner of the top-left pixel.
    A box covering exactly pixel columns 0..9 has xmin = 0, xmax = 10; its width is
    xmax - xmin (no "+1"). Pixel i has its centre at i + 0.5.

This is the order `tf.image.non_max_suppression` and `tf.image.crop_and_resize` expect
(`crop_and_resize` wants them divided by the feature map size, see `roi_pooling`).

Conversions at the edges:
  * PASCAL VOC XML: 1-based inclusive pixel indices (xmin, ymin, xmax, ymax).
    continuous = (ymin - 1, xmin - 1, ymax, xmax).  See `voc_to_boxes` / `boxes_to_voc`.
  * COCO: [x, y, width, height], 0-based continuous. See `coco_to_boxes` / `boxes_to_coco`.
  * Exported detections: [ymin, xmin, ymax, xmax] divided by the original image size
    (normalized to [0, 1]).

Regression deltas are ordered (dy, dx, dh, dw), matching the box order:
    dy = (cy - cy_a) / h_a,  dx = (cx - cx_a) / w_a,  dh = log(h / h_a),  dw = log(w / w_a)
optionally divided by per-coordinate stds (the detection head uses (0.1, 0.1, 0.2, 0.2)).
"""

import math

import tensorflow as tf

# Log-scale deltas are clamped at this value before exp() (as in torchvision / detectron).
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)
HEAD_BOX_STDS = (0.1, 0.1, 0.2, 0.2)


def box_area(boxes):
  """Area of boxes [..., 4] (yxyx) -> [...]; inverted boxes have area 0."""
  h = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  w = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return h * w


def iou(boxes1, boxes2):
  """Pairwise IoU.

  Args:
    boxes1: float32 [..., N, 4] yxyx.
    boxes2: float32 [..., M, 4] yxyx (same leading batch dims as boxes1).
  Returns:
    float32 [..., N, M]. Pairs whose union is zero (two zero-area boxes) give 0.
  """
  b1 = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
  b2 = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
  ymin = tf.maximum(b1[..., 0], b2[..., 0])
  xmin = tf.maximum(b1[..., 1], b2[..., 1])
  ymax = tf.minimum(b1[..., 2], b2[..., 2])
  xmax = tf.minimum(b1[..., 3], b2[..., 3])
  inter = tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)
  union = box_area(b1) + box_area(b2) - inter
  return tf.math.divide_no_nan(inter, union)


def _centers_and_sizes(boxes):
  h = boxes[..., 2] - boxes[..., 0]
  w = boxes[..., 3] - boxes[..., 1]
  cy = boxes[..., 0] + 0.5 * h
  cx = boxes[..., 1] + 0.5 * w
  return cy, cx, h, w


def encode_boxes(boxes, anchors, stds=(1.0, 1.0, 1.0, 1.0)):
  """Regression targets (dy, dx, dh, dw) that move `anchors` onto `boxes`.

  Args:
    boxes: float32 [..., 4] yxyx targets.
    anchors: float32 [..., 4] yxyx, broadcastable to boxes; must have positive size.
    stds: 4 floats each delta is divided by.
  Returns:
    float32 [..., 4] deltas. Zero-size target boxes are floored at 1e-3 pixels so
    the log stays finite.
  """
  cy, cx, h, w = _centers_and_sizes(boxes)
  acy, acx, ah, aw = _centers_and_sizes(anchors)
  h = tf.maximum(h, 1e-3)
  w = tf.maximum(w, 1e-3)
  ah = tf.maximum(ah, 1e-3)
  aw = tf.maximum(aw, 1e-3)
  deltas = tf.stack([(cy - acy) / ah, (cx - acx) / aw,
                     tf.math.log(h / ah), tf.math.log(w / aw)], axis=-1)
  return deltas / tf.constant(stds, deltas.dtype)


def decode_boxes(deltas, anchors, stds=(1.0, 1.0, 1.0, 1.0), clip=BBOX_XFORM_CLIP):
  """Inverse of `encode_boxes`; always computed in float32.

  Args:
    deltas: [..., 4] (dy, dx, dh, dw), any float dtype.
    anchors: float32 [..., 4] yxyx, broadcastable to deltas.
    stds: 4 floats the deltas were divided by.
    clip: log-scale deltas are clamped to at most this before exp().
  Returns:
    float32 [..., 4] yxyx boxes.
  """
  deltas = tf.cast(deltas, tf.float32) * tf.constant(stds, tf.float32)
  anchors = tf.cast(anchors, tf.float32)
  acy, acx, ah, aw = _centers_and_sizes(anchors)
  dh = tf.minimum(deltas[..., 2], clip)
  dw = tf.minimum(deltas[..., 3], clip)
  cy = deltas[..., 0] * ah + acy
  cx = deltas[..., 1] * aw + acx
  h = tf.exp(dh) * ah
  w = tf.exp(dw) * aw
  return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes, image_size):
  """Clips yxyx boxes to [0, height] x [0, width].

  Args:
    boxes: float32 [B, N, 4] (or [N, 4] with image_size [2]).
    image_size: [B, 2] (or [2]) (height, width) of the valid image area, any numeric dtype.
  Returns:
    float32 boxes, same shape.
  """
  size = tf.cast(image_size, boxes.dtype)
  if boxes.shape.rank == 3 and size.shape.rank == 2:
    size = size[:, tf.newaxis, :]
  h = size[..., 0:1]
  w = size[..., 1:2]
  ymin = tf.clip_by_value(boxes[..., 0:1], 0.0, h)
  xmin = tf.clip_by_value(boxes[..., 1:2], 0.0, w)
  ymax = tf.clip_by_value(boxes[..., 2:3], 0.0, h)
  xmax = tf.clip_by_value(boxes[..., 3:4], 0.0, w)
  return tf.concat([ymin, xmin, ymax, xmax], axis=-1)


# ---- conversions at the edges (work on numpy arrays or tensors) ----

def voc_to_boxes(xmin, ymin, xmax, ymax):
  """VOC 1-based inclusive pixel indices -> project convention [ymin, xmin, ymax, xmax]."""
  return [ymin - 1.0, xmin - 1.0, ymax, xmax]


def boxes_to_voc(box):
  """Project convention [ymin, xmin, ymax, xmax] -> VOC (xmin, ymin, xmax, ymax), 1-based."""
  ymin, xmin, ymax, xmax = box
  return [xmin + 1.0, ymin + 1.0, xmax, ymax]


def coco_to_boxes(bbox):
  """COCO [x, y, w, h] -> [ymin, xmin, ymax, xmax]."""
  x, y, w, h = bbox
  return [y, x, y + h, x + w]


def boxes_to_coco(box):
  """[ymin, xmin, ymax, xmax] -> COCO [x, y, w, h]."""
  ymin, xmin, ymax, xmax = box
  return [xmin, ymin, xmax - xmin, ymax - ymin]
