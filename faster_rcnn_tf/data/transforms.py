"""Geometric transforms of an image and its boxes, in TF ops (reused by the export graph).

Boxes are [ymin, xmin, ymax, xmax] float32 continuous pixels (see `ops.box_ops`): pixel
(r, c) covers [r, r+1) x [c, c+1). `tf.image.resize` samples with half-pixel centres, so
continuous coordinates map exactly as x' = x * (new_width / width); flipping maps
x' = width - x. Both keep boxes aligned with the pixels they cover.
"""

import tensorflow as tf


def compute_scale(height, width, min_size, max_size):
  """The resize factor: shorter side -> min_size unless the longer side would pass max_size.

      scale = min(min_size / min(height, width), max_size / max(height, width))

  Args:
    height, width: scalar ints or tensors (any numeric dtype), the image size.
    min_size, max_size: scalars, target shorter side and cap on the longer side.
  Returns:
    float32 scalar tensor.
  """
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  short = tf.minimum(h, w)
  long = tf.maximum(h, w)
  return tf.minimum(tf.cast(min_size, tf.float32) / short,
                    tf.cast(max_size, tf.float32) / long)


def compute_resized_size(height, width, scale):
  """int32 [2] (round(height * scale), round(width * scale)), each at least 1."""
  size = tf.stack([tf.cast(height, tf.float32), tf.cast(width, tf.float32)]) * scale
  return tf.maximum(tf.cast(tf.round(size), tf.int32), 1)


def resize_image_and_boxes(image, boxes, min_size=600, max_size=1000):
  """Resizes an image (bilinear) so its shorter side is min_size, longer at most max_size.

  Args:
    image: [H, W, C] any numeric dtype (uint8 0..255 typically).
    boxes: float32 [N, 4] yxyx pixels of `image` (may be empty).
    min_size, max_size: see `compute_scale`.
  Returns:
    (image float32 [H', W', C] (values in the input's range), boxes float32 [N, 4] in pixels
    of the resized image, scale float32 [] from `compute_scale`, size int32 [2] (H', W')).
    Boxes are scaled by the exact per-axis factors H'/H and W'/W (which differ from `scale`
    only by the rounding of the size, under half a pixel over the whole image), so they stay
    aligned with the resized pixels.
  """
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  scale = compute_scale(height, width, min_size, max_size)
  size = compute_resized_size(height, width, scale)
  # float32 input: TF's bilinear kernel is several times slower on uint8.
  resized = tf.image.resize(tf.cast(image, tf.float32), size, method='bilinear')
  factors = tf.cast(size, tf.float32) / tf.cast(tf.stack([height, width]), tf.float32)
  boxes = tf.cast(boxes, tf.float32) * tf.tile(factors, [2])
  return resized, boxes, scale, size


def flip_left_right(image, boxes):
  """Mirrors an image [H, W, C] and its boxes [N, 4] (yxyx pixels) horizontally."""
  width = tf.cast(tf.shape(image)[1], tf.float32)
  ymin, xmin, ymax, xmax = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
  flipped = tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)
  return tf.reverse(image, axis=[1]), flipped
