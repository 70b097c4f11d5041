"""Independent numpy references shared by the model tests (float64, written from the
formulas in `faster_rcnn_tf/ops/box_ops.py`'s docstring and, for the crops, from
`tf.image.crop_and_resize`'s documented definition, not from the project's code)."""

import numpy as np


def iou(a, b):
  """Pairwise IoU of yxyx boxes a [N, 4] and b [M, 4] -> [N, M]; 0 where the union is 0."""
  a = np.asarray(a, np.float64)[:, None]
  b = np.asarray(b, np.float64)[None]
  ih = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
  iw = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
  inter = ih * iw
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  union = area(a) + area(b) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def encode(boxes, anchors, stds=(1.0, 1.0, 1.0, 1.0)):
  """(dy, dx, dh, dw) moving anchors [N, 4] onto boxes [N, 4], divided by stds."""
  boxes = np.asarray(boxes, np.float64)
  anchors = np.asarray(anchors, np.float64)
  h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  cy, cx = boxes[:, 0] + h / 2, boxes[:, 1] + w / 2
  ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
  acy, acx = anchors[:, 0] + ah / 2, anchors[:, 1] + aw / 2
  deltas = np.stack([(cy - acy) / ah, (cx - acx) / aw, np.log(h / ah), np.log(w / aw)], axis=1)
  return deltas / np.asarray(stds, np.float64)


# ---------------------------------------------------------------- bilinear crops


def crop_samples(boxes, size, height, width):
  """Sample coordinates of `tf.image.crop_and_resize`, from its documentation: boxes
  [K, 4] yxyx normalized so that 0 is the first cell and 1 the last (y * (height - 1) is
  the cell coordinate); `size` points spanning each box, its corners included (one point:
  the box centre). Returns ys [K, size], xs [K, size] float64 cell coordinates."""
  b = np.asarray(boxes, np.float64)
  if size > 1:
    t = np.arange(size, dtype=np.float64) / (size - 1)
    ys = b[:, 0:1] * (height - 1) + t * (b[:, 2:3] - b[:, 0:1]) * (height - 1)
    xs = b[:, 1:2] * (width - 1) + t * (b[:, 3:4] - b[:, 1:2]) * (width - 1)
  else:
    ys = (b[:, 0:1] + b[:, 2:3]) / 2 * (height - 1)
    xs = (b[:, 1:2] + b[:, 3:4]) / 2 * (width - 1)
  return ys, xs


def _corners(y, x, height, width):
  """[(cell y, cell x, weight)] of a bilinear sample at (y, x); [] outside the map."""
  if y < 0 or y > height - 1 or x < 0 or x > width - 1:
    return []
  y0, x0 = int(np.floor(y)), int(np.floor(x))
  y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
  dy, dx = y - y0, x - x0
  return [(y0, x0, (1 - dy) * (1 - dx)), (y0, x1, (1 - dy) * dx),
          (y1, x0, dy * (1 - dx)), (y1, x1, dy * dx)]


def _contributions(boxes, box_indices, size, height, width):
  """Yields (k, i, j, image, cell y, cell x, weight): output (k, i, j) of the crops reads
  `weight` times that cell of that image."""
  ys, xs = crop_samples(boxes, size, height, width)
  for k, b in enumerate(np.asarray(box_indices)):
    for i in range(size):
      for j in range(size):
        for cy, cx, w in _corners(ys[k, i], xs[k, j], height, width):
          yield k, i, j, b, cy, cx, w


def crop_and_resize(features, boxes, box_indices, size):
  """float64 [K, size, size, C] bilinear crops (0 where a sample is outside the map)."""
  f = np.asarray(features, np.float64)
  _, height, width, channels = f.shape
  out = np.zeros((len(boxes), size, size, channels))
  for k, i, j, b, cy, cx, w in _contributions(boxes, box_indices, size, height, width):
    out[k, i, j] += w * f[b, cy, cx]
  return out


def crop_and_resize_grad(features_shape, boxes, box_indices, size, upstream):
  """Gradient of sum(crop_and_resize(features, ...) * upstream) with respect to the
  features: each output's upstream value goes back to the four cells it was read from,
  times their bilinear weights. float64 array of features_shape."""
  _, height, width, _ = features_shape
  up = np.asarray(upstream, np.float64)
  grad = np.zeros(features_shape)
  for k, i, j, b, cy, cx, w in _contributions(boxes, box_indices, size, height, width):
    grad[b, cy, cx] += w * up[k, i, j]
  return grad


def max_pool_2x2(x):
  """2x2 stride-2 max pool of [K, 2S, 2S, C] -> ([K, S, S, C], the argmax inside each
  window: 0..3 in row-major order, the first of equal values)."""
  k, s2, _, c = x.shape
  windows = x.reshape(k, s2 // 2, 2, s2 // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  windows = windows.reshape(k, s2 // 2, s2 // 2, c, 4)
  return windows.max(-1), windows.argmax(-1)


def max_pool_2x2_grad(argmax, upstream):
  """Gradient of sum(max_pool_2x2(x) * upstream) with respect to x: each window's
  upstream value goes to its maximum."""
  k, s, _, c = upstream.shape
  grad = np.zeros((k, s, s, c, 4))
  np.put_along_axis(grad, argmax[..., None], np.asarray(upstream, np.float64)[..., None], -1)
  return grad.reshape(k, s, s, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(k, 2 * s, 2 * s, c)


def roi_boxes(rois, stride, height, width):
  """Image-pixel RoIs [B, R, 4] -> boxes normalized for crop_and_resize [B * R, 4] and the
  image of each: pixel y lies on cell y / stride - 0.5 (cell i is centred on pixel
  stride * i + stride / 2), and cell 0 / height - 1 are 0 / 1."""
  r = np.asarray(rois, np.float64)
  scale = np.array([height - 1, width - 1, height - 1, width - 1], np.float64)
  boxes = ((r / stride - 0.5) / scale).reshape(-1, 4)
  return boxes, np.repeat(np.arange(r.shape[0]), r.shape[1])
