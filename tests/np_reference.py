"""Independent numpy references shared by the model tests (float64, written from the
formulas in `faster_rcnn_tf/ops/box_ops.py`'s docstring, not from its code)."""

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
