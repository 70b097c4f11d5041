"""Tests of faster_rcnn_tf.ops.box_ops against independent numpy references."""

import math

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import box_ops


def _random_boxes(rng, n, lo=0.0, hi=200.0, min_size=1.0, max_size=120.0):
  y = rng.uniform(lo, hi, n)
  x = rng.uniform(lo, hi, n)
  h = rng.uniform(min_size, max_size, n)
  w = rng.uniform(min_size, max_size, n)
  return np.stack([y, x, y + h, x + w], axis=1)


def _np_iou(a, b):
  """Pairwise IoU in float64, written with explicit loops."""
  out = np.zeros((len(a), len(b)))
  for i, p in enumerate(a):
    for j, q in enumerate(b):
      ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
      iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
      inter = ih * iw
      area_p = max(p[2] - p[0], 0.0) * max(p[3] - p[1], 0.0)
      area_q = max(q[2] - q[0], 0.0) * max(q[3] - q[1], 0.0)
      union = area_p + area_q - inter
      out[i, j] = inter / union if union > 0 else 0.0
  return out


def _np_encode(boxes, anchors, stds=(1.0, 1.0, 1.0, 1.0)):
  h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  cy, cx = boxes[:, 0] + h / 2, boxes[:, 1] + w / 2
  ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
  acy, acx = anchors[:, 0] + ah / 2, anchors[:, 1] + aw / 2
  d = np.stack([(cy - acy) / ah, (cx - acx) / aw, np.log(h / ah), np.log(w / aw)], axis=1)
  return d / np.array(stds)


def test_box_area_hand_values():
  boxes = tf.constant([[0, 0, 10, 20], [5, 5, 5, 9], [10, 10, 4, 20]], tf.float32)
  np.testing.assert_array_equal(box_ops.box_area(boxes).numpy(), [200.0, 0.0, 0.0])


def test_iou_matches_numpy_on_random_and_special_boxes():
  rng = np.random.default_rng(0)
  a = _random_boxes(rng, 30)
  b = _random_boxes(rng, 25)
  special_a = np.array([
      [0, 0, 10, 10],      # disjoint from special_b[0]
      [0, 0, 100, 100],    # contains special_b[1]
      [5, 5, 5, 5],        # zero area (point)
      [20, 20, 20, 40],    # zero area (segment)
      [0, 0, 10, 10],      # identical to special_b[4]
  ], np.float64)
  special_b = np.array([
      [50, 50, 60, 70],
      [10, 20, 30, 40],
      [5, 5, 5, 5],
      [0, 0, 50, 50],
      [0, 0, 10, 10],
  ], np.float64)
  a = np.concatenate([a, special_a]).astype(np.float32)
  b = np.concatenate([b, special_b]).astype(np.float32)
  got = box_ops.iou(tf.constant(a), tf.constant(b)).numpy()
  want = _np_iou(a.astype(np.float64), b.astype(np.float64))
  assert got.shape == (len(a), len(b))
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Hand checks of the special cases (row offset 30 / column offset 25).
  assert got[30, 25] == 0.0                                    # disjoint
  np.testing.assert_allclose(got[31, 26], 400.0 / 10000.0)      # nested
  assert got[32, 27] == 0.0                                    # two points: union 0 -> 0
  assert got[33, 28] == 0.0                                    # segment inside a box
  assert got[34, 29] == 1.0                                    # identical
  assert np.all(np.isfinite(got))


def test_iou_batched():
  rng = np.random.default_rng(1)
  a = np.stack([_random_boxes(rng, 7), _random_boxes(rng, 7)]).astype(np.float32)
  b = np.stack([_random_boxes(rng, 4), _random_boxes(rng, 4)]).astype(np.float32)
  got = box_ops.iou(tf.constant(a), tf.constant(b)).numpy()
  assert got.shape == (2, 7, 4)
  for i in range(2):
    np.testing.assert_allclose(got[i], _np_iou(a[i], b[i]), atol=1e-6)


def test_encode_matches_numpy():
  rng = np.random.default_rng(2)
  boxes = _random_boxes(rng, 50)
  anchors = _random_boxes(rng, 50)
  for stds in [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)]:
    got = box_ops.encode_boxes(tf.constant(boxes, tf.float32), tf.constant(anchors, tf.float32),
                               stds).numpy()
    np.testing.assert_allclose(got, _np_encode(boxes, anchors, stds), rtol=1e-4, atol=1e-4)


def test_encode_hand_values():
  anchor = tf.constant([[0.0, 0.0, 10.0, 20.0]])
  box = tf.constant([[5.0, 10.0, 25.0, 30.0]])  # centre (15, 20), size 20 x 20
  got = box_ops.encode_boxes(box, anchor).numpy()[0]
  np.testing.assert_allclose(got, [1.0, 0.5, math.log(2.0), 0.0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('stds', [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)])
def test_encode_decode_round_trip(stds):
  rng = np.random.default_rng(3)
  boxes = _random_boxes(rng, 200, hi=100.0, max_size=60.0).astype(np.float32)
  anchors = _random_boxes(rng, 200, hi=100.0, max_size=60.0).astype(np.float32)
  deltas = box_ops.encode_boxes(tf.constant(boxes), tf.constant(anchors), stds)
  back = box_ops.decode_boxes(deltas, tf.constant(anchors), stds).numpy()
  np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-5)


def test_decode_matches_numpy_and_broadcasts():
  rng = np.random.default_rng(4)
  anchors = _random_boxes(rng, 6)
  deltas = rng.normal(0.0, 0.5, size=(3, 6, 4))
  stds = np.array([0.1, 0.1, 0.2, 0.2])
  d = deltas * stds
  ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
  acy, acx = anchors[:, 0] + ah / 2, anchors[:, 1] + aw / 2
  cy, cx = d[..., 0] * ah + acy, d[..., 1] * aw + acx
  h, w = np.exp(d[..., 2]) * ah, np.exp(d[..., 3]) * aw
  want = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
  got = box_ops.decode_boxes(tf.constant(deltas, tf.float16), tf.constant(anchors, tf.float32),
                             tuple(stds)).numpy()
  assert got.dtype == np.float32
  # float16 deltas: compare with the reference decoded from the same rounded deltas.
  d16 = deltas.astype(np.float16).astype(np.float64) * stds
  cy, cx = d16[..., 0] * ah + acy, d16[..., 1] * aw + acx
  h, w = np.exp(d16[..., 2]) * ah, np.exp(d16[..., 3]) * aw
  want16 = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
  np.testing.assert_allclose(got, want16, rtol=1e-4, atol=1e-3)
  got32 = box_ops.decode_boxes(tf.constant(deltas, tf.float32), tf.constant(anchors, tf.float32),
                               tuple(stds)).numpy()
  np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-3)


def test_decode_clamps_log_scale_deltas():
  anchor = tf.constant([[0.0, 0.0, 16.0, 32.0]])  # centre (8, 16)
  deltas = tf.constant([[0.0, 0.0, 50.0, 100.0]])
  got = box_ops.decode_boxes(deltas, anchor).numpy()[0]
  factor = 1000.0 / 16.0
  h, w = 16.0 * factor, 32.0 * factor
  np.testing.assert_allclose(got, [8 - h / 2, 16 - w / 2, 8 + h / 2, 16 + w / 2], rtol=1e-5)
  assert np.all(np.isfinite(got))
  assert box_ops.BBOX_XFORM_CLIP == pytest.approx(math.log(1000.0 / 16.0))
  # Just below the clamp nothing changes; negative deltas are not clamped.
  deltas = tf.constant([[0.0, 0.0, 4.0, -3.0]])
  got = box_ops.decode_boxes(deltas, anchor).numpy()[0]
  h, w = 16.0 * math.exp(4.0), 32.0 * math.exp(-3.0)
  np.testing.assert_allclose(got, [8 - h / 2, 16 - w / 2, 8 + h / 2, 16 + w / 2], rtol=1e-5)


def test_clip_boxes_batched_and_single():
  boxes = np.array([[[-5, -3, 50, 80], [10, 20, 30, 40]],
                    [[-1, 5, 200, 300], [100, 120, 150, 160]]], np.float32)
  sizes = np.array([[40, 60], [120, 110]], np.int32)
  got = box_ops.clip_boxes(tf.constant(boxes), tf.constant(sizes)).numpy()
  want = boxes.copy()
  for b in range(2):
    want[b, :, [0, 2]] = np.clip(boxes[b, :, [0, 2]], 0, sizes[b, 0])
    want[b, :, [1, 3]] = np.clip(boxes[b, :, [1, 3]], 0, sizes[b, 1])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[0, 0], [0, 0, 40, 60])
  np.testing.assert_array_equal(got[1, 1], [100, 110, 120, 110])
  single = box_ops.clip_boxes(tf.constant(boxes[0]), tf.constant([40, 60])).numpy()
  np.testing.assert_array_equal(single, want[0])


def test_voc_conversion_hand_values_and_round_trip():
  # A VOC box covering pixel columns 1..10 and rows 1..20 (1-based inclusive).
  box = box_ops.voc_to_boxes(xmin=1, ymin=1, xmax=10, ymax=20)
  assert box == [0.0, 0.0, 20, 10]
  assert box[3] - box[1] == 10 and box[2] - box[0] == 20  # width / height in pixels
  assert box_ops.boxes_to_voc([0.0, 0.0, 20.0, 10.0]) == [1.0, 1.0, 10.0, 20.0]
  rng = np.random.default_rng(5)
  for _ in range(20):
    xmin, ymin = rng.integers(1, 300, 2)
    xmax, ymax = xmin + rng.integers(0, 200), ymin + rng.integers(0, 200)
    back = box_ops.boxes_to_voc(box_ops.voc_to_boxes(float(xmin), float(ymin), float(xmax),
                                                     float(ymax)))
    assert back == [xmin, ymin, xmax, ymax]
  # Works on numpy arrays too.
  arr = box_ops.voc_to_boxes(np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0]),
                             np.array([7.0, 8.0]))
  np.testing.assert_array_equal(np.stack(arr, -1), [[2, 0, 7, 5], [3, 1, 8, 6]])


def test_coco_conversion_hand_values_and_round_trip():
  assert box_ops.coco_to_boxes([5.0, 6.0, 10.0, 20.0]) == [6.0, 5.0, 26.0, 15.0]
  assert box_ops.boxes_to_coco([6.0, 5.0, 26.0, 15.0]) == [5.0, 6.0, 10.0, 20.0]
  rng = np.random.default_rng(6)
  for bbox in rng.uniform(0, 300, size=(20, 4)):
    np.testing.assert_allclose(box_ops.boxes_to_coco(box_ops.coco_to_boxes(list(bbox))), bbox,
                               rtol=1e-12, atol=1e-9)
