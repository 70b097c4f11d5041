"""Tests of faster_rcnn_tf.layers.proposal_targets against numpy references."""

import numpy as np
import tensorflow as tf

from faster_rcnn_tf.layers.proposal_targets import ProposalTargets
from tests import np_reference

_np_iou = np_reference.iou
_np_encode = np_reference.encode

STDS = np.array([0.1, 0.1, 0.2, 0.2])
K = 3


def _jitter(rng, box, n, amount):
  h, w = box[2] - box[0], box[3] - box[1]
  noise = rng.uniform(-amount, amount, size=(n, 4)) * np.array([h, w, h, w])
  return box[None] + noise


def _make_case(seed=0, num_proposals=60):
  rng = np.random.default_rng(seed)
  gt_boxes = np.array([[[10, 10, 60, 70], [80, 30, 140, 90], [20, 100, 70, 150], [0, 0, 0, 0]],
                       [[0, 0, 0, 0]] * 4], np.float32)
  gt_classes = np.array([[2, 1, 3, 0], [0, 0, 0, 0]], np.int32)
  rois = np.zeros([2, num_proposals, 4], np.float32)
  valid = np.zeros([2, num_proposals], bool)
  for b in range(2):
    parts = [_jitter(rng, gt_boxes[0, g], 8, 0.25) for g in range(3)]   # many foreground
    parts.append(_jitter(rng, gt_boxes[0, 0], 6, 0.6))                    # mixed
    y, x = rng.uniform(0, 150, (2, num_proposals))
    h, w = rng.uniform(8, 60, (2, num_proposals))
    parts.append(np.stack([y, x, y + h, x + w], 1))                       # random
    boxes = np.concatenate(parts)[:num_proposals]
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
    rois[b] = boxes
    valid[b] = rng.uniform(size=num_proposals) < 0.75
  # Invalid proposals: near-copies of a gt box with a marker offset (they would be
  # foreground if they were ever used).
  invalid_rows = np.flatnonzero(~valid[0])
  rois[0, invalid_rows] = gt_boxes[0, 1] + np.array([0.375, 0.375, 0.375, 0.375]) + \
      np.arange(len(invalid_rows))[:, None] * 0.0625
  return rois, valid, gt_boxes, gt_classes


def _check(out, rois, valid, gt_boxes, gt_classes, num_samples, fg_fraction, fg_iou=0.5,
           bg_hi=0.5, bg_lo=0.1):
  s_rois = out['rois'].numpy()
  labels = out['labels'].numpy()
  weights = out['weights'].numpy()
  targets = out['box_targets'].numpy()
  box_w = out['box_weights'].numpy()
  max_iou = out['max_iou'].numpy()
  assert s_rois.shape == (len(rois), num_samples, 4)
  assert targets.shape == box_w.shape == (len(rois), num_samples, 4 * (K + 1))
  for b in range(len(rois)):
    gvalid = gt_classes[b] > 0
    gts = gt_boxes[b][gvalid]
    cands = np.concatenate([rois[b][valid[b]], gts])
    used = weights[b] == 1.0
    assert set(np.unique(weights[b])) <= {0.0, 1.0}
    if gvalid.any():
      ious = _np_iou(s_rois[b], gts)
      best = ious.max(1)
      np.testing.assert_allclose(max_iou[b], best, atol=1e-5)
      c_best = _np_iou(cands, gts).max(1)
      avail_fg = int((c_best >= fg_iou).sum())
      avail_bg = int(((c_best < bg_hi) & (c_best >= bg_lo)).sum())
    else:
      best = np.zeros(num_samples)
      avail_fg, avail_bg = 0, len(cands)
    fg = used & (labels[b] > 0)
    bg = used & (labels[b] == 0)
    max_fg = int(num_samples * fg_fraction)
    assert fg.sum() <= max_fg
    assert fg.sum() == min(avail_fg, max_fg)
    assert bg.sum() == min(avail_bg, num_samples - fg.sum())
    # Foreground / background IoU ranges, checked with numpy IoU.
    assert np.all(best[fg] >= fg_iou)
    assert np.all((best[bg] < bg_hi) & (best[bg] >= bg_lo)) or not gvalid.any()
    # Filler slots never have a label or targets.
    assert np.all(labels[b][~used] == 0)
    # Every used RoI is a valid candidate (a valid proposal or a valid gt box).
    for r in s_rois[b][used]:
      assert np.any(np.all(np.abs(cands - r) < 1e-6, axis=1)), r
    # Classes: the argmax gt's class; regression targets only in that class's slot.
    for i in range(num_samples):
      if fg[i]:
        g = np.argmax(_np_iou(s_rois[b][i:i + 1], gts)[0])
        assert labels[b, i] == gt_classes[b][gvalid][g]
        want = _np_encode(gts[g:g + 1], s_rois[b][i:i + 1])[0] / STDS
        lo = 4 * labels[b, i]
        np.testing.assert_allclose(targets[b, i, lo:lo + 4], want, rtol=1e-4, atol=1e-4)
        mask = np.zeros(4 * (K + 1), bool)
        mask[lo:lo + 4] = True
        assert np.all(targets[b, i][~mask] == 0.0)
        np.testing.assert_array_equal(box_w[b, i], mask.astype(np.float32))
      else:
        assert np.all(targets[b, i] == 0.0) and np.all(box_w[b, i] == 0.0)
  return labels, weights, s_rois


def test_sampling_rules_targets_and_counts():
  rois, valid, gt_boxes, gt_classes = _make_case()
  layer = ProposalTargets(K, num_samples=16, fg_fraction=0.25, bg_iou_lo=0.1)
  out = layer(tf.constant(rois), tf.constant(valid), tf.constant(gt_boxes),
              tf.constant(gt_classes), seed=tf.constant([1, 2]))
  labels, weights, s_rois = _check(out, rois, valid, gt_boxes, gt_classes, 16, 0.25)
  assert (labels[0] > 0).sum() == 4  # plenty of foreground: exactly the cap
  # Invalid (padded) proposals are never sampled with weight 1.
  for r in s_rois[0][weights[0] == 1]:
    assert not np.any(np.all(np.abs(rois[0][~valid[0]] - r) < 1e-6, axis=1))
  # Image 1 has no gt: only background, every slot used when enough proposals are valid.
  assert np.all(labels[1] == 0)
  assert weights[1].sum() == min(16, valid[1].sum())


def test_larger_sample_uses_ground_truth_and_fillers():
  rois, valid, gt_boxes, gt_classes = _make_case(seed=1, num_proposals=62)
  valid[:, 40:] = False  # fewer valid candidates than slots (P + G >= R always holds)
  layer = ProposalTargets(K, num_samples=64, fg_fraction=0.5, bg_iou_lo=0.0)
  out = layer(tf.constant(rois), tf.constant(valid), tf.constant(gt_boxes),
              tf.constant(gt_classes), seed=tf.constant([3, 4]))
  labels, weights, _ = _check(out, rois, valid, gt_boxes, gt_classes, 64, 0.5, bg_lo=0.0)
  # Fewer candidates than slots: fillers with weight 0 exist.
  assert np.all(weights.sum(1) < 64)


def test_ground_truth_boxes_are_candidates():
  rois, valid, gt_boxes, gt_classes = _make_case(seed=2)
  valid[:] = False  # no valid proposal at all
  layer = ProposalTargets(K, num_samples=16, fg_fraction=0.25, bg_iou_lo=0.0)
  out = layer(tf.constant(rois), tf.constant(valid), tf.constant(gt_boxes),
              tf.constant(gt_classes), seed=tf.constant([5, 6]))
  labels, weights, s_rois = _check(out, rois, valid, gt_boxes, gt_classes, 16, 0.25, bg_lo=0.0)
  fg = (weights[0] == 1) & (labels[0] > 0)
  assert fg.sum() == 3
  got = sorted(map(tuple, s_rois[0][fg].tolist()))
  assert got == sorted(map(tuple, gt_boxes[0, :3].tolist()))
  np.testing.assert_array_equal(np.sort(labels[0][fg]), [1, 2, 3])
  # Their regression targets are zero (a box onto itself) in the right slot.
  targets = out['box_targets'].numpy()[0][fg]
  np.testing.assert_allclose(targets, 0.0, atol=1e-6)
  np.testing.assert_array_equal(out['box_weights'].numpy()[0][fg].sum(1), [4, 4, 4])
  # The image without gt and without proposals samples nothing.
  assert weights[1].sum() == 0


def test_seeds_reproduce_and_differ():
  rois, valid, gt_boxes, gt_classes = _make_case(seed=3)
  layer = ProposalTargets(K, num_samples=16)
  args = [tf.constant(x) for x in (rois, valid, gt_boxes, gt_classes)]
  a = layer(*args, seed=tf.constant([1, 1]))['rois'].numpy()
  b = layer(*args, seed=tf.constant([1, 1]))['rois'].numpy()
  c = layer(*args, seed=tf.constant([2, 1]))['rois'].numpy()
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)


def test_config_round_trip_and_xla():
  layer = ProposalTargets(K, num_samples=32, fg_fraction=0.5, fg_iou=0.6, bg_iou_hi=0.4,
                          bg_iou_lo=0.05, box_stds=(0.2, 0.2, 0.3, 0.3), name='pt')
  clone = ProposalTargets.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  assert (clone.num_classes, clone.num_samples, clone.fg_iou, clone.box_stds) == (
      K, 32, 0.6, (0.2, 0.2, 0.3, 0.3))
  rois, valid, gt_boxes, gt_classes = _make_case(seed=4)
  args = [tf.constant(x) for x in (rois, valid, gt_boxes, gt_classes)]
  seed = tf.constant([9, 9])
  eager = clone(*args, seed=seed)
  jit = tf.function(lambda *a: clone(*a, seed=seed), jit_compile=True)(*args)
  for key in eager:
    np.testing.assert_allclose(jit[key].numpy(), eager[key].numpy(), rtol=1e-5, atol=1e-5)
