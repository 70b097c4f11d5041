"""Tests of faster_rcnn_tf.layers.anchor_targets with labels computed independently in numpy."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.layers import anchor_targets
from faster_rcnn_tf.layers.anchor_targets import AnchorTargets
from faster_rcnn_tf.ops import anchors as anchor_ops
from tests import np_reference

_np_iou = np_reference.iou
_np_encode = np_reference.encode


def _np_inside(anchors, size):
  h, w = size
  return ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= h)
          & (anchors[:, 3] <= w))


def _np_labels(anchors, size, gt_boxes, gt_classes, pos_iou=0.7, neg_iou=0.3):
  """The rule, for one image: (labels [N], matched gt [N] for positives, -1 elsewhere)."""
  n = len(anchors)
  valid = gt_classes > 0
  inside = _np_inside(anchors, size)
  labels = np.full(n, -1)
  matched = np.full(n, -1)
  if not valid.any():
    labels[inside] = 0
    return labels, matched, inside
  ious = _np_iou(anchors, gt_boxes[valid])
  gt_ids = np.flatnonzero(valid)
  max_iou = ious.max(1)
  # Guard the reference itself: no IoU sits on a threshold within float32 noise.
  assert np.all(np.abs(max_iou - pos_iou) > 1e-5) and np.all(np.abs(max_iou - neg_iou) > 1e-5)
  labels[max_iou < neg_iou] = 0
  labels[max_iou >= pos_iou] = 1
  matched[max_iou >= pos_iou] = gt_ids[ious.argmax(1)][max_iou >= pos_iou]
  # The best inside anchor(s) of each gt box (ties included) are positive and matched to
  # the gt box they overlap most among those they are the best for.
  col_best = np.where(inside[:, None], ious, -1.0).max(0)  # [G]
  is_best = (inside[:, None] & (col_best[None] > 0)
             & (np.abs(ious - col_best[None]) < 1e-9))  # [N, G]
  best_any = is_best.any(1)
  labels[best_any] = 1
  matched[best_any] = gt_ids[np.where(is_best, ious, -1.0).argmax(1)][best_any]
  labels[~inside] = -1
  matched[labels != 1] = -1
  return labels, matched, inside


def _hand_case():
  """32 x 32 anchors every 8 pixels over a 128 x 128 canvas, partly outside it."""
  starts = np.arange(-8, 105, 8, dtype=np.float32)
  yy, xx = np.meshgrid(starts, starts, indexing='ij')
  anchors = np.stack([yy, xx, yy + 32, xx + 32], -1).reshape(-1, 4)
  gt_boxes = np.array([
      # image 0: an exact anchor (IoU 1, neighbours >= 0.7 at offset 2 px? no: 8 px -> 0.6),
      # a tiny box (best IoU < 0.3: only its best anchors are positive, with ties),
      # a box half-way between anchors (tied best anchors), a padding row.
      [[16, 16, 48, 48], [60, 61, 66, 67], [40, 76, 72, 108], [0, 0, 0, 0]],
      # image 1 (valid area 96 x 112): a box at the valid border, one big box, padding.
      [[64, 80, 96, 112], [8, 8, 60, 56], [0, 0, 0, 0], [0, 0, 0, 0]],
  ], np.float32)
  gt_classes = np.array([[1, 2, 3, 0], [2, 1, 0, 0]], np.int32)
  image_sizes = np.array([[128, 128], [96, 112]], np.int32)
  return anchors, gt_boxes, gt_classes, image_sizes


def test_assign_anchor_labels_hand_case_exact():
  anchors, gt_boxes, gt_classes, image_sizes = _hand_case()
  inside = anchor_targets.anchors_inside(tf.constant(anchors), tf.constant(image_sizes))
  labels, matched = anchor_targets.assign_anchor_labels(
      tf.constant(anchors), inside, tf.constant(gt_boxes), tf.constant(gt_classes > 0))
  labels, matched, inside = labels.numpy(), matched.numpy(), inside.numpy()
  total_ties = 0
  for b in range(2):
    want, want_matched, want_inside = _np_labels(anchors, image_sizes[b], gt_boxes[b],
                                                 gt_classes[b])
    np.testing.assert_array_equal(inside[b], want_inside)
    np.testing.assert_array_equal(labels[b], want)
    for value in (-1, 0, 1):
      assert (labels[b] == value).sum() == (want == value).sum()
    pos = want == 1
    np.testing.assert_array_equal(matched[b][pos], want_matched[pos])
    # Every valid gt box has at least one positive anchor matched to it.
    ious = _np_iou(anchors, gt_boxes[b])
    for g in np.flatnonzero(gt_classes[b] > 0):
      assert np.any(labels[b][matched[b] == g] == 1), (b, g)
      best = ious[want_inside, g].max()
      total_ties += max(0, int(np.sum(np.abs(ious[want_inside, g] - best) < 1e-9)) - 1)
    assert not np.any(labels[b][~want_inside] >= 0)
  # The hand case exercises the interesting branches.
  assert total_ties > 0, 'expected a tie for the best anchor of some gt box'
  assert (labels == 1).sum() > 0 and (labels == 0).sum() > 0 and (labels == -1).sum() > 0
  ious0 = _np_iou(anchors, gt_boxes[0, 1:2])[:, 0]
  assert ious0.max() < 0.3  # the tiny box is positive only through the best-anchor rule


def test_assign_anchor_labels_no_ground_truth():
  anchors, gt_boxes, _, image_sizes = _hand_case()
  inside = anchor_targets.anchors_inside(tf.constant(anchors), tf.constant(image_sizes))
  labels, _ = anchor_targets.assign_anchor_labels(
      tf.constant(anchors), inside, tf.constant(gt_boxes), tf.zeros([2, 4], tf.bool))
  labels, inside = labels.numpy(), inside.numpy()
  np.testing.assert_array_equal(labels, np.where(inside, 0, -1))


def test_anchors_inside_allowed_border():
  anchors = tf.constant([[-3.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 13.0], [0.0, 0.0, 20.0, 12.0]])
  sizes = tf.constant([[20, 12]])
  np.testing.assert_array_equal(anchor_targets.anchors_inside(anchors, sizes).numpy(),
                                [[False, False, True]])
  np.testing.assert_array_equal(anchor_targets.anchors_inside(anchors, sizes, 5.0).numpy(),
                                [[True, True, True]])


def _tiled_case(num_gt_rows=6):
  base = anchor_ops.generate_base_anchors(16, (0.5, 1.0, 2.0), (1, 2, 4))
  anchors = anchor_ops.tile_anchors(base, 40, 40, stride=4).numpy()  # 14400 anchors, 160x160
  return anchors


def _check_sampled(out, anchors, image_sizes, gt_boxes, gt_classes, num_samples=256):
  labels = out['labels'].numpy()
  targets = out['box_targets'].numpy()
  weights = out['box_weights'].numpy()
  for b in range(len(labels)):
    want, want_matched, inside = _np_labels(anchors, image_sizes[b], gt_boxes[b], gt_classes[b])
    sampled = labels[b] >= 0
    assert sampled.sum() <= num_samples
    assert (labels[b] == 1).sum() <= num_samples // 2
    # Sampled labels agree with the rule, and never touch anchors outside the valid area.
    np.testing.assert_array_equal(labels[b][sampled], want[sampled])
    assert not np.any(sampled & ~inside)
    h, w = image_sizes[b]
    s = anchors[sampled]
    assert np.all((s[:, 0] >= 0) & (s[:, 1] >= 0) & (s[:, 2] <= h) & (s[:, 3] <= w))
    # Counts: min(available, 128) positives, negatives fill the rest.
    npos = min((want == 1).sum(), num_samples // 2)
    assert (labels[b] == 1).sum() == npos
    assert (labels[b] == 0).sum() == min((want == 0).sum(), num_samples - npos)
    # Regression targets: only for sampled positives, numpy encoding of the matched gt.
    pos = labels[b] == 1
    np.testing.assert_array_equal(weights[b], np.repeat(pos[:, None].astype(np.float32), 4, 1))
    assert np.all(targets[b][~pos] == 0.0)
    if pos.any():
      want_t = _np_encode(gt_boxes[b][want_matched[pos]].astype(np.float64), anchors[pos])
      np.testing.assert_allclose(targets[b][pos], want_t, rtol=1e-4, atol=1e-5)
  return labels


def test_sampling_many_positives_respects_budget_and_valid_area():
  # Dense 32 x 32 anchors every pixel (about 60 anchors reach IoU 0.7 with a 32 x 32 box).
  starts = np.arange(-4, 133, dtype=np.float32)
  yy, xx = np.meshgrid(starts, starts, indexing='ij')
  anchors = np.stack([yy, xx, yy + 32, xx + 32], -1).reshape(-1, 4)
  gt_boxes = np.array([
      [[10, 10, 42, 42], [60, 20, 92, 52], [30, 70, 64, 100], [100, 90, 140, 150],
       [0, 0, 0, 0]],
      [[5, 5, 37, 37], [40, 40, 72, 72], [20, 60, 50, 88], [80, 10, 112, 40], [0, 0, 0, 0]],
  ], np.float32)
  gt_classes = np.array([[1, 2, 3, 1, 0], [3, 3, 2, 1, 0]], np.int32)
  image_sizes = np.array([[160, 160], [118, 95]], np.int32)  # image 1 is padded
  for b in range(2):
    want, _, _ = _np_labels(anchors, image_sizes[b], gt_boxes[b], gt_classes[b])
    assert (want == 1).sum() > 128, 'the case must have more positives than the budget'
  layer = AnchorTargets()
  out = layer(tf.constant(anchors), tf.constant(image_sizes), tf.constant(gt_boxes),
              tf.constant(gt_classes), seed=tf.constant([1, 2]))
  labels = _check_sampled(out, anchors, image_sizes, gt_boxes, gt_classes)
  assert np.all((labels == 1).sum(1) == 128) and np.all((labels >= 0).sum(1) == 256)
  # Different seeds pick different anchors; the same seed the same ones.
  again = layer(tf.constant(anchors), tf.constant(image_sizes), tf.constant(gt_boxes),
                tf.constant(gt_classes), seed=tf.constant([1, 2]))['labels'].numpy()
  other = layer(tf.constant(anchors), tf.constant(image_sizes), tf.constant(gt_boxes),
                tf.constant(gt_classes), seed=tf.constant([5, 2]))['labels'].numpy()
  np.testing.assert_array_equal(again, labels)
  assert np.any(other != labels)


def test_sampling_few_positives_keeps_one_per_gt():
  anchors = _tiled_case()
  # Small boxes: hardly any anchor reaches 0.7, so positives come from the best-anchor rule.
  gt_boxes = np.array([[[20, 30, 29, 37], [100, 100, 106, 103], [70, 10, 90, 14]],
                       [[50, 50, 56, 60], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
  gt_classes = np.array([[1, 2, 3], [2, 0, 0]], np.int32)
  image_sizes = np.array([[160, 150], [120, 160]], np.int32)
  out = AnchorTargets()(tf.constant(anchors), tf.constant(image_sizes), tf.constant(gt_boxes),
                        tf.constant(gt_classes), seed=tf.constant([3, 4]))
  labels = _check_sampled(out, anchors, image_sizes, gt_boxes, gt_classes)
  for b in range(2):
    _, matched, _ = _np_labels(anchors, image_sizes[b], gt_boxes[b], gt_classes[b])
    for g in np.flatnonzero(gt_classes[b] > 0):
      assert np.any((labels[b] == 1) & (matched == g)), (b, g)
    assert (labels[b] == 1).sum() < 128


def test_no_ground_truth_gives_only_negatives_and_zero_targets():
  anchors = _tiled_case()
  image_sizes = np.array([[160, 160], [64, 96]], np.int32)
  gt_boxes = np.zeros([2, 3, 4], np.float32)
  gt_classes = np.zeros([2, 3], np.int32)
  out = AnchorTargets()(tf.constant(anchors), tf.constant(image_sizes), tf.constant(gt_boxes),
                        tf.constant(gt_classes))
  labels = _check_sampled(out, anchors, image_sizes, gt_boxes, gt_classes)
  assert np.all((labels == 1).sum(1) == 0)
  assert np.all((labels == 0).sum(1) == 256)
  assert np.all(out['box_weights'].numpy() == 0) and np.all(out['box_targets'].numpy() == 0)
  assert np.all(np.isfinite(out['box_targets'].numpy()))


def test_other_settings_and_config_round_trip():
  anchors = _tiled_case()
  gt_boxes = np.array([[[10, 10, 50, 60], [60, 20, 100, 52], [30, 70, 94, 140]]], np.float32)
  gt_classes = np.array([[1, 2, 3]], np.int32)
  image_sizes = np.array([[160, 160]], np.int32)
  layer = AnchorTargets(num_samples=64, positive_fraction=0.25, name='at')
  clone = AnchorTargets.from_config(layer.get_config())
  assert clone.num_samples == 64 and clone.positive_fraction == 0.25 and clone.name == 'at'
  assert clone.get_config() == layer.get_config()
  out = clone(tf.constant(anchors), tf.constant(image_sizes), tf.constant(gt_boxes),
              tf.constant(gt_classes), seed=tf.constant([0, 1]))
  labels = out['labels'].numpy()
  assert (labels == 1).sum() == 16 and (labels == 0).sum() == 48


def test_compiles_with_xla_and_matches_eager():
  anchors = _tiled_case()
  gt_boxes = tf.constant([[[10, 10, 50, 60], [0, 0, 0, 0]]], tf.float32)
  gt_classes = tf.constant([[2, 0]], tf.int32)
  sizes = tf.constant([[150, 140]], tf.int32)
  layer = AnchorTargets()
  seed = tf.constant([4, 4])
  eager = layer(tf.constant(anchors), sizes, gt_boxes, gt_classes, seed=seed)
  fn = tf.function(lambda *a: layer(*a, seed=seed), jit_compile=True)
  jit = fn(tf.constant(anchors), sizes, gt_boxes, gt_classes)
  for key in eager:
    np.testing.assert_allclose(jit[key].numpy(), eager[key].numpy(), rtol=1e-5, atol=1e-5)
