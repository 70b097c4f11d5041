"""Tests of faster_rcnn_tf.layers.rpn_head."""

import numpy as np
import tensorflow as tf

from faster_rcnn_tf.layers.rpn_head import RPNHead


def _np_conv3x3_same(x, kernel, bias):
  b, h, w, _ = x.shape
  pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      out += np.einsum('bhwc,cd->bhwd', pad[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
  return out + bias


def test_outputs_match_numpy_in_row_column_anchor_order():
  rng = np.random.default_rng(0)
  a, ch = 3, 16
  features = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)
  head = RPNHead(num_anchors=a, channels=ch)
  logits, deltas = head(tf.constant(features))
  assert logits.shape == (2, 5 * 6 * a, 2) and deltas.shape == (2, 5 * 6 * a, 4)
  k3, b3 = [v.numpy().astype(np.float64) for v in head.conv.weights]
  kc, bc = [v.numpy().astype(np.float64) for v in head.cls.weights]
  kb, bb = [v.numpy().astype(np.float64) for v in head.box.weights]
  x = np.maximum(_np_conv3x3_same(features.astype(np.float64), k3, b3), 0)
  cls = np.einsum('bhwc,cd->bhwd', x, kc[0, 0]) + bc   # [2, 5, 6, 2A]
  box = np.einsum('bhwc,cd->bhwd', x, kb[0, 0]) + bb   # [2, 5, 6, 4A]
  logits, deltas = logits.numpy(), deltas.numpy()
  for (b, i, j, k) in [(0, 0, 0, 0), (1, 4, 5, 2), (0, 2, 3, 1), (1, 0, 5, 0), (0, 4, 0, 2)]:
    idx = (i * 6 + j) * a + k
    np.testing.assert_allclose(logits[b, idx], cls[b, i, j, 2 * k:2 * k + 2], rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(deltas[b, idx], box[b, i, j, 4 * k:4 * k + 4], rtol=1e-4,
                               atol=1e-6)
  np.testing.assert_allclose(logits, cls.reshape(2, -1, 2), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(deltas, box.reshape(2, -1, 4), rtol=1e-4, atol=1e-6)


def test_initialization_and_config_round_trip():
  head = RPNHead(num_anchors=9, channels=32, name='rpn_head')
  head.build((None, None, None, 64))
  kc = head.cls.kernel.numpy()
  assert kc.shape == (1, 1, 32, 18) and head.box.kernel.shape == (1, 1, 32, 36)
  assert 0.005 < kc.std() < 0.015  # normal(0, 0.01)
  clone = RPNHead.from_config(head.get_config())
  assert clone.get_config() == head.get_config()
  assert clone.num_anchors == 9 and clone.channels == 32 and clone.name == 'rpn_head'
  clone.build((None, None, None, 64))
  clone.set_weights(head.get_weights())
  x = tf.random.stateless_normal([1, 3, 4, 64], seed=[1, 1])
  for got, want in zip(clone(x), head(x)):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
