"""Anchor generation: base anchors and their tiling over a feature map.

Boxes follow the project convention (see `box_ops`): [ymin, xmin, ymax, xmax], continuous
pixels. The classic Faster R-CNN table (base 16, ratios (0.5, 1, 2), scales (8, 16, 32))
is reproduced exactly: its inclusive-pixel corners (x1, y1, x2, y2) become
(y1, x1, y2 + 1, x2 + 1) here, so every base anchor is centred on (8, 8), the centre of
the first stride-16 cell.
"""

import numpy as np
import tensorflow as tf


def generate_base_anchors(base_size=16, ratios=(0.5, 1.0, 2.0), scales=(8, 16, 32)):
  """The A = len(ratios) * len(scales) anchors of one feature cell at the origin.

  Follows the reference enumeration: for each aspect ratio (height / width) the area
  base_size**2 is kept with rounded sides, then each is multiplied by every scale.
  Order: ratio-major, scale-minor (ratio 0.5 with scales 8, 16, 32 first).

  Returns:
    numpy float32 [A, 4] yxyx anchors centred on (base_size / 2, base_size / 2).
  """
  center = base_size / 2.0
  area = float(base_size * base_size)
  anchors = []
  for ratio in ratios:
    w = np.round(np.sqrt(area / ratio))
    h = np.round(w * ratio)
    for scale in scales:
      hs, ws = h * scale, w * scale
      anchors.append([center - hs / 2.0, center - ws / 2.0,
                      center + hs / 2.0, center + ws / 2.0])
  return np.array(anchors, dtype=np.float32)


def tile_anchors(base_anchors, feature_height, feature_width, stride=16):
  """All anchors of a feature map, in (row, column, anchor) order.

  Args:
    base_anchors: float32 [A, 4] from `generate_base_anchors`.
    feature_height, feature_width: ints or scalar int tensors (the feature map size).
    stride: pixels between neighbouring feature cells.
  Returns:
    float32 tensor [feature_height * feature_width * A, 4] yxyx; the anchors of cell
    (i, j) are the base anchors shifted by (stride * i, stride * j), so their centres sit
    at (stride * i + stride / 2, stride * j + stride / 2) when base_size == stride.
  """
  base = tf.constant(base_anchors, tf.float32)
  ys = tf.cast(tf.range(feature_height), tf.float32) * stride
  xs = tf.cast(tf.range(feature_width), tf.float32) * stride
  yy, xx = tf.meshgrid(ys, xs, indexing='ij')
  shifts = tf.stack([yy, xx, yy, xx], axis=-1)  # [H, W, 4]
  anchors = shifts[:, :, tf.newaxis, :] + base[tf.newaxis, tf.newaxis]  # [H, W, A, 4]
  return tf.reshape(anchors, [-1, 4])
