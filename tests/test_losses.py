"""Tests of faster_rcnn_tf.ops.losses against numpy formulas."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import losses


def _np_smooth_l1(x, sigma):
  s2 = sigma ** 2
  a = np.abs(x)
  return np.where(a < 1.0 / s2, 0.5 * s2 * x * x, a - 0.5 / s2)


@pytest.mark.parametrize('sigma', [1.0, 3.0])
def test_smooth_l1_matches_piecewise_formula(sigma):
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 1.5, 500), [0.0, 1.0 / sigma ** 2, -1.0 / sigma ** 2,
                                                 1e-4, -7.0]])
  got = losses.smooth_l1(tf.constant(x, tf.float32), sigma).numpy()
  np.testing.assert_allclose(got, _np_smooth_l1(x, sigma), rtol=1e-5, atol=1e-6)
  # Hand values: continuous at the knot, quadratic inside, linear outside.
  knot = 1.0 / sigma ** 2
  np.testing.assert_allclose(losses.smooth_l1(tf.constant([knot, 2.0, 0.0]), sigma).numpy(),
                             [0.5 / sigma ** 2, 2.0 - 0.5 / sigma ** 2, 0.0], rtol=1e-6)


def test_sampled_softmax_loss_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, size=(2, 50, 5)).astype(np.float32)
  labels = rng.integers(-1, 5, size=(2, 50)).astype(np.int32)
  weights = ((labels >= 0) & (rng.uniform(size=(2, 50)) < 0.6)).astype(np.float32)
  lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  picked = np.take_along_axis(logits, np.maximum(labels, 0)[..., None], -1)[..., 0]
  ce = lse - picked
  want = (ce * weights).sum() / weights.sum()
  got = losses.sampled_softmax_loss(tf.constant(logits), tf.constant(labels),
                                    tf.constant(weights)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # float16 logits are accepted and computed in float32.
  got16 = losses.sampled_softmax_loss(tf.constant(logits, tf.float16), tf.constant(labels),
                                      tf.constant(weights))
  assert got16.dtype == tf.float32
  np.testing.assert_allclose(got16.numpy(), want, rtol=1e-2)


def test_sampled_softmax_loss_zero_when_nothing_sampled():
  got = losses.sampled_softmax_loss(tf.ones([3, 2]), tf.constant([-1, 0, 1]), tf.zeros([3]))
  assert got.numpy() == 0.0


@pytest.mark.parametrize('sigma', [1.0, 3.0])
def test_sampled_box_loss_matches_numpy(sigma):
  rng = np.random.default_rng(2)
  pred = rng.normal(0, 1, size=(2, 30, 8)).astype(np.float32)
  target = rng.normal(0, 1, size=(2, 30, 8)).astype(np.float32)
  w = (rng.uniform(size=(2, 30, 8)) < 0.3).astype(np.float32)
  num = np.float32(17.0)
  want = (_np_smooth_l1(pred.astype(np.float64) - target, sigma) * w).sum() / num
  got = losses.sampled_box_loss(tf.constant(pred), tf.constant(target), tf.constant(w),
                                tf.constant(num), sigma).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sampled_box_loss_exactly_zero_with_zero_weights():
  pred = tf.constant([[1e3, -5.0, 2.0, 0.3]])
  target = tf.constant([[0.0, 7.0, -2.0, 1.0]])
  assert losses.sampled_box_loss(pred, target, tf.zeros([1, 4]), tf.constant(4.0),
                                 3.0).numpy() == 0.0
  # ... and when the number of sampled entries is 0 as well (no NaN).
  assert losses.sampled_box_loss(pred, target, tf.zeros([1, 4]), tf.constant(0.0),
                                 1.0).numpy() == 0.0
