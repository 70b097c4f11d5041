"""Tests of faster_rcnn_tf.ops.roi_pooling against tf.image.crop_and_resize and numpy."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import roi_pooling
from tests import np_reference


def _random_case(seed, num_boxes=40):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  y1 = rng.uniform(-0.4, 1.2, num_boxes)
  x1 = rng.uniform(-0.4, 1.2, num_boxes)
  y2 = y1 + rng.uniform(-0.5, 0.9, num_boxes)   # negative sizes: flipped boxes
  x2 = x1 + rng.uniform(-0.5, 0.9, num_boxes)
  boxes = np.stack([y1, x1, y2, x2], axis=1).astype(np.float32)
  boxes[0] = [0.0, 0.0, 1.0, 1.0]            # the whole map
  boxes[1] = [0.8, 0.7, 0.2, 0.1]            # flipped
  boxes[2] = [-0.5, -0.5, 1.5, 1.5]          # larger than the map
  boxes[3] = [0.3, 0.4, 0.3, 0.4]            # a point
  boxes[4] = [1.5, 1.5, 2.0, 2.0]            # entirely outside
  box_indices = rng.integers(0, 2, num_boxes).astype(np.int32)
  return features, boxes, box_indices


@pytest.mark.parametrize('crop_size', [1, 2, 7, 14])
def test_crop_and_resize_equals_tf_image(crop_size):
  features, boxes, box_indices = _random_case(crop_size)
  want = tf.image.crop_and_resize(features, boxes, box_indices, [crop_size, crop_size]).numpy()
  got = roi_pooling.crop_and_resize(tf.constant(features), tf.constant(boxes),
                                    tf.constant(box_indices), crop_size).numpy()
  assert got.shape == (len(boxes), crop_size, crop_size, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Outside the map the value is 0.
  if crop_size > 1:
    assert np.all(got[4] == 0.0)


def test_crop_and_resize_keeps_dtype():
  features, boxes, box_indices = _random_case(3, 5)
  got = roi_pooling.crop_and_resize(tf.constant(features, tf.float16), tf.constant(boxes),
                                    tf.constant(box_indices), 4)
  assert got.dtype == tf.float16
  want = tf.image.crop_and_resize(features.astype(np.float16).astype(np.float32), boxes,
                                  box_indices, [4, 4]).numpy()
  np.testing.assert_allclose(got.numpy().astype(np.float32), want, rtol=1e-2, atol=1e-2)


def _np_crop_pool_reference(features, rois, stride, crop_size, max_pool):
  """Image-pixel RoIs -> tf.image.crop_and_resize (+ numpy 2x2 max) with boxes normalized
  by the convention 'pixel y is cell y / stride - 0.5' computed here in numpy."""
  b, hf, wf, _ = features.shape
  scale = np.array([hf - 1, wf - 1, hf - 1, wf - 1], np.float64)
  norm = ((rois.astype(np.float64) / stride - 0.5) / scale).reshape(-1, 4).astype(np.float32)
  idx = np.repeat(np.arange(b), rois.shape[1]).astype(np.int32)
  size = 2 * crop_size if max_pool else crop_size
  crops = tf.image.crop_and_resize(features, norm, idx, [size, size]).numpy()
  if max_pool:
    k, s = crops.shape[0], crop_size
    crops = crops.reshape(k, s, 2, s, 2, -1).max(axis=(2, 4))
  return crops


def _random_rois(rng, b, r, hi):
  y = rng.uniform(-20, hi, (b, r))
  x = rng.uniform(-20, hi, (b, r))
  h = rng.uniform(4, 90, (b, r))
  w = rng.uniform(4, 90, (b, r))
  return np.stack([y, x, y + h, x + w], -1).astype(np.float32)


@pytest.mark.parametrize('impl', ['gather', 'native', 'auto'])
@pytest.mark.parametrize('max_pool', [True, False])
def test_crop_pool_matches_reference(max_pool, impl):
  rng = np.random.default_rng(7)
  features = rng.normal(size=(2, 8, 10, 4)).astype(np.float32)
  rois = _random_rois(rng, 2, 6, 150)
  got = roi_pooling.crop_pool(tf.constant(features), tf.constant(rois), 16, 7, max_pool,
                              impl=impl).numpy()
  assert got.shape == (12, 7, 7, 4)
  want = _np_crop_pool_reference(features, rois, 16, 7, max_pool)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_crop_pool_rejects_unknown_impl():
  with pytest.raises(ValueError, match='bogus'):
    roi_pooling.crop_pool(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 1, 4]), 16, impl='bogus')


def test_crop_pool_samples_cell_centres():
  # A RoI spanning cell centres 1..7 (pixels 24..120 at stride 16) sampled at 7 points
  # reads exactly the feature cells 1..7, in image order.
  rng = np.random.default_rng(8)
  features = rng.normal(size=(2, 9, 9, 2)).astype(np.float32)
  rois = np.array([[[24.0, 8.0, 120.0, 104.0]], [[8.0, 24.0, 104.0, 120.0]]], np.float32)
  got = roi_pooling.crop_pool(tf.constant(features), tf.constant(rois), 16, 7, False).numpy()
  np.testing.assert_allclose(got[0], features[0, 1:8, 0:7], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[1], features[1, 0:7, 1:8], rtol=1e-5, atol=1e-6)


# ---- the gather-based crop (what XLA training runs) and its gradient against numpy ----
# tests/np_reference.py writes the bilinear crop and its gradient from the documented
# definition, with loops (float64): no TensorFlow op is shared with the code under test.


def _xla(fn):
  return tf.function(fn, jit_compile=True)


def _crop_loss_and_grad(features, boxes, box_indices, size, upstream):
  features = tf.convert_to_tensor(features)
  with tf.GradientTape() as tape:
    tape.watch(features)
    crops = roi_pooling.crop_and_resize(features, boxes, box_indices, size)
    loss = tf.reduce_sum(crops * upstream)
  return crops, tape.gradient(loss, features)


@pytest.mark.parametrize('compiled', [False, True], ids=['eager', 'xla'])
@pytest.mark.parametrize('crop_size', [1, 2, 7, 14])
def test_gather_crop_and_its_gradient_equal_the_numpy_reference(crop_size, compiled):
  """Catches a wrong sample position (corners, centre of a 1-point crop, the cell
  convention), wrong bilinear weights or corners, a lost 0 outside the map, and any
  gradient that does not send each output back to its four cells with those weights
  (flipped, point, partly and wholly outside boxes included)."""
  features, boxes, box_indices = _random_case(20 + crop_size, num_boxes=12)
  upstream = np.random.default_rng(crop_size).normal(
      size=(len(boxes), crop_size, crop_size, 3)).astype(np.float32)
  fn = _xla(_crop_loss_and_grad) if compiled else _crop_loss_and_grad
  crops, grad = fn(tf.constant(features), tf.constant(boxes), tf.constant(box_indices),
                   crop_size, tf.constant(upstream))
  np.testing.assert_allclose(
      crops.numpy(), np_reference.crop_and_resize(features, boxes, box_indices, crop_size),
      rtol=1e-4, atol=1e-5)
  want = np_reference.crop_and_resize_grad(features.shape, boxes, box_indices, crop_size,
                                           upstream)
  assert np.abs(want).sum() > 1.0
  np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('max_pool', [True, False])
def test_crop_pool_gradient_under_xla_equals_the_numpy_reference(max_pool):
  """crop_pool as the XLA-compiled training step runs it (impl 'auto' picks the gather
  crop there): image-pixel RoIs, crops, the 2x2 max pool, and the gradient with respect
  to the features, against numpy."""
  rng = np.random.default_rng(9)
  features = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  rois = _random_rois(rng, 2, 5, 100)
  size = 14 if max_pool else 7
  upstream = rng.normal(size=(10, 7, 7, 3)).astype(np.float32)

  @tf.function(jit_compile=True)
  def pooled_and_grad(f, r, up):
    with tf.GradientTape() as tape:
      tape.watch(f)
      out = roi_pooling.crop_pool(f, r, 16, 7, max_pool)
      loss = tf.reduce_sum(out * up)
    return out, tape.gradient(loss, f)

  got, grad = pooled_and_grad(tf.constant(features), tf.constant(rois), tf.constant(upstream))
  boxes, idx = np_reference.roi_boxes(rois, 16, 8, 8)
  crops = np_reference.crop_and_resize(features, boxes, idx, size)
  if max_pool:
    want, argmax = np_reference.max_pool_2x2(crops)
    crop_upstream = np_reference.max_pool_2x2_grad(argmax, upstream)
  else:
    want, crop_upstream = crops, upstream
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
  want_grad = np_reference.crop_and_resize_grad(features.shape, boxes, idx, size,
                                                crop_upstream)
  assert np.abs(want_grad).sum() > 1.0
  np.testing.assert_allclose(grad.numpy(), want_grad, rtol=1e-4, atol=1e-4)


def test_crop_pool_compiles_with_xla():
  # impl='auto' (the default) must pick the gather implementation under XLA.
  rng = np.random.default_rng(10)
  features = tf.constant(rng.normal(size=(2, 6, 7, 5)).astype(np.float32))
  rois = tf.constant(_random_rois(rng, 2, 4, 90))
  fn = tf.function(lambda f, r: roi_pooling.crop_pool(f, r, 16, 7, True), jit_compile=True)
  got = fn(features, rois).numpy()
  want = roi_pooling.crop_pool(features, rois, 16, 7, True).numpy()
  assert got.shape == (8, 7, 7, 5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
