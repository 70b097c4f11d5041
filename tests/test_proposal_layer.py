"""Tests of faster_rcnn_tf.layers.proposal_layer against a per-image numpy +
tf.image.non_max_suppression reference."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.layers.proposal_layer import ProposalLayer, generate_proposals
from faster_rcnn_tf.ops import anchors as anchor_ops
from faster_rcnn_tf.ops import nms
from tests.step_helpers import graph_op_types


def _np_decode(deltas, anchors):
  d = deltas.astype(np.float64)
  a = anchors.astype(np.float64)
  ah, aw = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
  acy, acx = a[:, 0] + ah / 2, a[:, 1] + aw / 2
  clip = np.log(1000.0 / 16.0)
  cy, cx = d[:, 0] * ah + acy, d[:, 1] * aw + acx
  h, w = np.exp(np.minimum(d[:, 2], clip)) * ah, np.exp(np.minimum(d[:, 3], clip)) * aw
  return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


def _reference(scores, deltas, anchors, size, pre, post, iou, min_size):
  boxes = _np_decode(deltas, anchors)
  boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, size[0])
  boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, size[1])
  keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
  boxes, scores = boxes[keep], scores[keep]
  order = np.argsort(-scores, kind='stable')[:pre]
  boxes, scores = boxes[order].astype(np.float32), scores[order].astype(np.float32)
  idx = tf.image.non_max_suppression(boxes, scores, post, iou).numpy()
  return boxes[idx], scores[idx]


def _inputs(seed):
  rng = np.random.default_rng(seed)
  base = anchor_ops.generate_base_anchors(16, (0.5, 1.0, 2.0), (1, 2, 4))
  anchors = anchor_ops.tile_anchors(base, 6, 8, 16).numpy()  # canvas 96 x 128
  n = len(anchors)
  scores = rng.uniform(size=(2, n)).astype(np.float32)
  deltas = rng.normal(0, 0.3, size=(2, n, 4)).astype(np.float32)
  deltas[:, :5, 2:] = 9.0  # some huge boxes (clamped before exp), clipped to the image
  sizes = np.array([[96, 128], [70, 100]], np.int32)
  return scores, deltas, anchors, sizes


@pytest.mark.parametrize('method', ['kernel', 'tiled'])
@pytest.mark.parametrize('pre,post,iou,min_size', [(100, 30, 0.7, 4.0), (400, 300, 0.5, 0.0),
                                                   (50, 80, 0.7, 10.0)])
def test_matches_per_image_reference(pre, post, iou, min_size, method):
  scores, deltas, anchors, sizes = _inputs(0)
  # Tiles of 32 boxes: several tiles, and for (400, 300) a kept buffer filled past a tile.
  rois, roi_scores, valid = generate_proposals(
      tf.constant(scores), tf.constant(deltas), tf.constant(anchors), tf.constant(sizes),
      pre, post, iou, min_size, nms_method=method, nms_tile_size=32)
  rois, roi_scores, valid = rois.numpy(), roi_scores.numpy(), valid.numpy()
  assert rois.shape == (2, post, 4) and valid.shape == (2, post)
  counts = []
  for b in range(2):
    ref_boxes, ref_scores = _reference(scores[b], deltas[b], anchors, sizes[b], pre, post, iou,
                                       min_size)
    n = len(ref_boxes)
    counts.append(n)
    assert valid[b].sum() == n
    assert np.all(valid[b][:n])  # valid ones come first, in NMS order
    np.testing.assert_allclose(rois[b][:n], ref_boxes, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(roi_scores[b][:n], ref_scores, atol=1e-6)
    # Padding is zero; every valid roi lies inside its image and is big enough.
    assert np.all(rois[b][n:] == 0) and np.all(roi_scores[b][n:] == 0)
    r = rois[b][:n]
    assert np.all(r >= 0) and np.all(r[:, [0, 2]] <= sizes[b, 0]) and np.all(
        r[:, [1, 3]] <= sizes[b, 1])
    assert np.all(r[:, 2] - r[:, 0] >= min_size) and np.all(r[:, 3] - r[:, 1] >= min_size)
  if (pre, post) == (100, 30):
    assert counts == [30, 30]
  if post >= pre:
    assert max(counts) < post  # padding exercised


def test_layer_train_and_test_numbers_config_and_xla():
  scores, deltas, anchors, sizes = _inputs(1)
  layer = ProposalLayer(train_pre_nms_topk=200, train_post_nms_topk=40, test_pre_nms_topk=60,
                        test_post_nms_topk=20, nms_iou=0.6, min_size=2.0, nms_method='tiled',
                        nms_tile_size=16, name='proposals')
  config = layer.get_config()
  assert (config['nms_method'], config['nms_tile_size']) == ('tiled', 16)
  clone = ProposalLayer.from_config(config)
  assert clone.get_config() == config
  assert (clone.nms_method, clone.nms_tile_size) == ('tiled', 16)
  args = [tf.constant(x) for x in (scores, deltas, anchors, sizes)]
  train = clone(*args, training=True)
  test = clone(*args, training=False)
  assert train[0].shape == (2, 40, 4) and test[0].shape == (2, 20, 4)
  for b in range(2):
    ref, _ = _reference(scores[b], deltas[b], anchors, sizes[b], 60, 20, 0.6, 2.0)
    np.testing.assert_allclose(test[0].numpy()[b][:len(ref)], ref, atol=1e-4)
    ref, _ = _reference(scores[b], deltas[b], anchors, sizes[b], 200, 40, 0.6, 2.0)
    np.testing.assert_allclose(train[0].numpy()[b][:len(ref)], ref, atol=1e-4)
  jit = tf.function(lambda *a: clone(*a, training=False), jit_compile=True)(*args)
  for got, want in zip(jit, test):
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


@pytest.mark.parametrize('method', ['kernel', 'tiled'])
def test_unknown_anchor_count_gives_the_same_proposals(method):
  """With the anchor count unknown when traced (images of any size), the tiled NMS pads
  to pre_nms_topk boxes that never come out; the proposals are those of known shapes."""
  scores, deltas, anchors, sizes = _inputs(2)
  args = [tf.constant(x) for x in (scores, deltas, anchors, sizes)]
  known = generate_proposals(*args, 300, 50, 0.7, 2.0, nms_method=method, nms_tile_size=64)
  fn = tf.function(lambda s, d, a, z: generate_proposals(s, d, a, z, 300, 50, 0.7, 2.0,
                                                         nms_method=method,
                                                         nms_tile_size=64),
                   input_signature=[tf.TensorSpec([None, None]),
                                    tf.TensorSpec([None, None, 4]),
                                    tf.TensorSpec([None, 4]), tf.TensorSpec([None, 2], tf.int32)])
  unknown = fn(*args)
  assert unknown[0].shape[1] == 50
  for got, want in zip(unknown, known):
    np.testing.assert_array_equal(got.numpy(), want.numpy())
  assert known[2].numpy().sum() > 20


def test_layer_refuses_an_unknown_nms_method():
  with pytest.raises(ValueError, match='nms_method'):
    ProposalLayer(nms_method='fast')


def test_auto_takes_the_tiled_form_for_many_proposals_on_a_cpu(monkeypatch):
  monkeypatch.setattr(tf.config, 'list_logical_devices', lambda kind=None: [])
  args = [tf.constant(x) for x in _inputs(3)]

  def kernel_used(post):
    fn = tf.function(lambda *a: generate_proposals(*a, 400, post, 0.7, 0.0))
    return 'NonMaxSuppressionV4' in graph_op_types(fn.get_concrete_function(*args))

  assert kernel_used(nms.CPU_TILED_FROM - 1)
  assert not kernel_used(nms.CPU_TILED_FROM)
