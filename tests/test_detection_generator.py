"""Tests of faster_rcnn_tf.layers.detection_generator against a per-class reference."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf.layers import detection_generator
from faster_rcnn_tf.layers.detection_generator import DetectionGenerator

# 'tiled' with tiles of 16 RoIs: several tiles per class, the kept buffer compared.
METHODS = pytest.mark.parametrize('method,tile_size', [
    ('kernel', 512), ('batched', 512), ('tiled', 512), ('tiled', 16)])

STDS = np.array([0.1, 0.1, 0.2, 0.2])


def _np_decode(deltas, rois):
  d = deltas.astype(np.float64) * STDS
  a = rois.astype(np.float64)
  ah, aw = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
  acy, acx = a[:, 0] + ah / 2, a[:, 1] + aw / 2
  cy, cx = d[:, 0] * ah + acy, d[:, 1] * aw + acx
  h = np.exp(np.minimum(d[:, 2], np.log(1000 / 16))) * ah
  w = np.exp(np.minimum(d[:, 3], np.log(1000 / 16))) * aw
  return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


def _reference(rois, valid, probs, deltas, size, score_threshold, iou, max_det):
  """Per class: numpy decode + clip, tf.image.non_max_suppression; merge by score."""
  num_classes = probs.shape[1] - 1
  dets = []
  for c in range(1, num_classes + 1):
    boxes = _np_decode(deltas[:, 4 * c:4 * c + 4], rois)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, size[0])
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, size[1])
    boxes = boxes.astype(np.float32)
    scores = np.where(valid, probs[:, c], 0.0).astype(np.float32)
    keep = tf.image.non_max_suppression(boxes, scores, max_det, iou,
                                        score_threshold=score_threshold).numpy()
    dets += [(scores[i], c, boxes[i]) for i in keep]
  dets.sort(key=lambda d: -d[0])
  return dets[:max_det]


def _case(seed, num_rois=24, num_classes=3):
  rng = np.random.default_rng(seed)
  centres = rng.uniform(10, 90, size=(4, 2))
  rois = []
  for _ in range(num_rois):  # clustered rois so that NMS has work to do
    cy, cx = centres[rng.integers(4)] + rng.normal(0, 4, 2)
    h, w = rng.uniform(10, 40, 2)
    rois.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
  rois = np.array(rois, np.float32)
  logits = rng.normal(0, 2, size=(num_rois, num_classes + 1))
  probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
  deltas = rng.normal(0, 1, size=(num_rois, 4 * (num_classes + 1))).astype(np.float32)
  valid = rng.uniform(size=num_rois) < 0.8
  return rois, valid, probs, deltas


def _run(layer, cases, sizes):
  stack = lambda i: tf.constant(np.stack([c[i] for c in cases]))
  return layer(stack(0), stack(1), stack(2), stack(3), tf.constant(sizes, tf.int32))


@METHODS
def test_matches_per_class_reference(method, tile_size):
  cases = [_case(0), _case(1)]
  sizes = np.array([[100, 100], [80, 90]], np.int32)
  layer = DetectionGenerator(score_threshold=0.05, nms_iou=0.3, max_detections=40,
                             nms_method=method, nms_tile_size=tile_size)
  out = {k: v.numpy() for k, v in _run(layer, cases, sizes).items()}
  assert out[inputs.DETECTION_BOXES].shape == (2, 40, 4)
  assert out[inputs.DETECTION_CLASSES].dtype == np.int32
  for b in range(2):
    ref = _reference(*cases[b], sizes[b], 0.05, 0.3, 40)
    n = len(ref)
    assert out[inputs.NUM_DETECTIONS][b] == n
    assert 0 < n < 40, n  # some detections, some padding
    np.testing.assert_allclose(out[inputs.DETECTION_SCORES][b][:n], [d[0] for d in ref],
                               atol=1e-6)
    np.testing.assert_array_equal(out[inputs.DETECTION_CLASSES][b][:n], [d[1] for d in ref])
    np.testing.assert_allclose(out[inputs.DETECTION_BOXES][b][:n], np.stack([d[2] for d in ref]),
                               atol=1e-4)
    # Padded entries are zero; classes are 1..K; scores sorted and above the threshold.
    assert np.all(out[inputs.DETECTION_BOXES][b][n:] == 0)
    assert np.all(out[inputs.DETECTION_SCORES][b][n:] == 0)
    assert np.all(out[inputs.DETECTION_CLASSES][b][n:] == 0)
    cls = out[inputs.DETECTION_CLASSES][b][:n]
    assert np.all((cls >= 1) & (cls <= 3))
    s = out[inputs.DETECTION_SCORES][b][:n]
    assert np.all(np.diff(s) <= 0) and np.all(s > 0.05)
    # Within a class no two detections overlap more than the NMS threshold.
    boxes = out[inputs.DETECTION_BOXES][b][:n]
    for c in range(1, 4):
      bc = boxes[cls == c]
      if len(bc) > 1:
        iou = tf.image.non_max_suppression(bc, np.arange(len(bc), 0, -1, dtype=np.float32),
                                           len(bc), 0.3).numpy()
        assert len(iou) == len(bc)


@METHODS
def test_max_detections_truncates_and_invalid_rois_ignored(method, tile_size):
  rois, valid, probs, deltas = _case(2)
  valid[:] = False
  valid[3] = True
  layer = DetectionGenerator(score_threshold=0.0, nms_iou=0.3, max_detections=5,
                             nms_method=method, nms_tile_size=tile_size)
  out = _run(layer, [(rois, valid, probs, deltas)], np.array([[100, 100]]))
  # Only roi 3 is valid: one detection per class whose probability exceeds 0.
  assert out[inputs.NUM_DETECTIONS].numpy()[0] == 3
  cls = out[inputs.DETECTION_CLASSES].numpy()[0]
  np.testing.assert_array_equal(np.sort(cls[:3]), [1, 2, 3])
  np.testing.assert_allclose(np.sort(out[inputs.DETECTION_SCORES].numpy()[0][:3]),
                             np.sort(probs[3, 1:]), atol=1e-6)
  # Truncation at max_detections keeps the best ones.
  rois, valid, probs, deltas = _case(3, num_rois=40)
  valid[:] = True
  out = _run(DetectionGenerator(score_threshold=0.0, nms_iou=0.9, max_detections=4,
                                nms_method=method, nms_tile_size=tile_size),
             [(rois, valid, probs, deltas)], np.array([[100, 100]]))
  ref = _reference(rois, valid, probs, deltas, (100, 100), 0.0, 0.9, 4)
  assert out[inputs.NUM_DETECTIONS].numpy()[0] == 4
  np.testing.assert_allclose(out[inputs.DETECTION_SCORES].numpy()[0], [d[0] for d in ref],
                             atol=1e-6)


@METHODS
def test_config_round_trip_and_xla(method, tile_size):
  layer = DetectionGenerator(score_threshold=0.2, nms_iou=0.4, max_detections=7,
                             box_stds=(0.1, 0.1, 0.2, 0.2), nms_method=method,
                             nms_tile_size=tile_size, name='det')
  config = layer.get_config()
  assert (config['nms_method'], config['nms_tile_size']) == (method, tile_size)
  clone = DetectionGenerator.from_config(config)
  assert clone.get_config() == config
  assert (clone.score_threshold, clone.nms_iou, clone.max_detections) == (0.2, 0.4, 7)
  assert (clone.nms_method, clone.nms_tile_size) == (method, tile_size)
  cases = [_case(4), _case(5)]
  sizes = np.array([[100, 100], [64, 100]], np.int32)
  eager = _run(clone, cases, sizes)
  stack = lambda i: tf.constant(np.stack([c[i] for c in cases]))
  fn = tf.function(clone, jit_compile=True)
  jit = fn(stack(0), stack(1), stack(2), stack(3), tf.constant(sizes))
  for k in eager:
    np.testing.assert_allclose(jit[k].numpy(), eager[k].numpy(), atol=1e-5)


def test_nms_method_auto_follows_the_visible_devices(monkeypatch):
  monkeypatch.setattr(tf.config, 'list_logical_devices',
                      lambda kind=None: ['gpu0'] if kind == 'GPU' else [])
  assert detection_generator.resolve_nms_method('auto') == 'tiled'
  monkeypatch.setattr(tf.config, 'list_logical_devices',
                      lambda kind=None: ['tpu0'] if kind == 'TPU' else [])
  assert detection_generator.resolve_nms_method('auto') == 'tiled'
  monkeypatch.setattr(tf.config, 'list_logical_devices', lambda kind=None: [])
  assert detection_generator.resolve_nms_method('auto') == 'kernel'
  seen = []
  tf.function(lambda: seen.append(detection_generator.resolve_nms_method('auto')) or 0,
              jit_compile=True)()
  assert seen == ['tiled']  # under XLA whatever the devices
  assert detection_generator.resolve_nms_method('batched') == 'batched'
  with pytest.raises(ValueError, match='nms_method'):
    DetectionGenerator(nms_method='fast')
