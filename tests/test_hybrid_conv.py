"""Tests of faster_rcnn_tf.ops.hybrid_conv: values and gradients against a numpy
im2col convolution, and against the Keras layers it stands in for."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import backbones
from faster_rcnn_tf.ops import hybrid_conv


def _pad_amounts(size, k, stride, padding):
  if padding == 'VALID':
    return (size - k) // stride + 1, 0
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return out, total // 2  # TensorFlow puts the odd pixel after


def _np_conv(x, kernel, bias, strides, padding):
  """Returns (pre-activation y, im2col columns, padded-input geometry) in numpy."""
  b, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  oh, top = _pad_amounts(h, kh, strides[0], padding)
  ow, left = _pad_amounts(w, kw, strides[1], padding)
  padded = np.zeros((b, h + kh + strides[0], w + kw + strides[1], cin), np.float64)
  padded[:, top:top + h, left:left + w] = x
  cols = np.zeros((b, oh, ow, kh, kw, cin))
  for i in range(oh):
    for j in range(ow):
      y0, x0 = i * strides[0], j * strides[1]
      cols[:, i, j] = padded[:, y0:y0 + kh, x0:x0 + kw]
  y = cols.reshape(b * oh * ow, -1) @ kernel.reshape(-1, cout) + bias
  return y.reshape(b, oh, ow, cout), cols, (top, left, padded.shape)


def _np_grads(x, kernel, bias, strides, padding, relu, upstream):
  """Gradients of sum(upstream * act(conv(x) + b)) with respect to x, kernel and bias."""
  z, cols, (top, left, padded_shape) = _np_conv(x, kernel, bias, strides, padding)
  dz = upstream * (z > 0) if relu else upstream
  b, oh, ow, cout = dz.shape
  kh, kw, cin, _ = kernel.shape
  flat_dz = dz.reshape(-1, cout)
  dk = (cols.reshape(flat_dz.shape[0], -1).T @ flat_dz).reshape(kernel.shape)
  db = flat_dz.sum(axis=0)
  dcols = (flat_dz @ kernel.reshape(-1, cout).T).reshape(b, oh, ow, kh, kw, cin)
  dpadded = np.zeros(padded_shape)
  for i in range(oh):
    for j in range(ow):
      y0, x0 = i * strides[0], j * strides[1]
      dpadded[:, y0:y0 + kh, x0:x0 + kw] += dcols[:, i, j]
  dx = dpadded[:, top:top + x.shape[1], left:left + x.shape[2]]
  return dx, dk, db


@pytest.mark.parametrize('strides,padding,relu,library', [
    ((1, 1), 'SAME', True, 'onednn'), ((2, 2), 'SAME', True, 'xla'),
    ((2, 2), 'SAME', True, 'onednn'), ((1, 1), 'VALID', False, 'xla'),
    ((2, 1), 'VALID', True, 'onednn'), ((2, 1), 'VALID', True, 'xla')])
def test_conv2d_values_and_gradients_match_numpy(strides, padding, relu, library):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 7, 9, 3))
  kernel = rng.normal(size=(3, 3, 3, 4)) * 0.5
  bias = rng.normal(size=4) * 0.5
  tx, tk, tb = (tf.constant(a, tf.float32) for a in (x, kernel, bias))
  z, _, _ = _np_conv(x, kernel, bias, strides, padding)
  upstream = rng.normal(size=z.shape)
  with tf.GradientTape() as tape:
    tape.watch([tx, tk, tb])
    y = hybrid_conv.conv2d(tx, tk, tb, strides, padding, relu=relu,
                           input_grad_library=library)
    loss = tf.reduce_sum(y * tf.constant(upstream, tf.float32))
  dx, dk, db = tape.gradient(loss, [tx, tk, tb])
  np.testing.assert_allclose(y.numpy(), np.maximum(z, 0) if relu else z, atol=1e-4)
  want = _np_grads(x, kernel, bias, strides, padding, relu, upstream)
  for got, ref, name in zip((dx, dk, db), want, ('input', 'kernel', 'bias')):
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-3, rtol=1e-4, err_msg=name)


def test_conv2d_refuses_an_unknown_input_grad_library():
  x = tf.zeros([1, 4, 4, 2])
  with pytest.raises(ValueError, match='input_grad_library'):
    hybrid_conv.conv2d(x, tf.zeros([3, 3, 2, 2]), tf.zeros([2]), input_grad_library='cuda')


def test_conv2d_skips_gradients_it_is_told_are_not_needed():
  x = tf.random.stateless_normal([1, 6, 6, 2], seed=[1, 1])
  k = tf.random.stateless_normal([3, 3, 2, 3], seed=[1, 2])
  b = tf.zeros([3])
  with tf.GradientTape() as tape:
    tape.watch([x, k, b])
    loss = tf.reduce_sum(hybrid_conv.conv2d(x, k, b, input_grad=False, filter_grad=False))
  dx, dk, db = tape.gradient(loss, [x, k, b])
  assert dx is None and dk is None
  assert db.shape == (3,)


def _small_convnet():
  """Conv (frozen) -> max pool -> conv stride 2 linear -> conv valid relu, no bias."""
  images = keras.Input((None, None, 3))
  x = keras.layers.Conv2D(4, 3, padding='same', activation='relu', name='c1')(images)
  x = keras.layers.MaxPooling2D(2, name='p1')(x)
  x = keras.layers.Conv2D(5, 3, strides=2, padding='same', name='c2')(x)
  x = keras.layers.Conv2D(6, 3, padding='valid', activation='relu', use_bias=False,
                          name='c3')(x)
  model = keras.Model(images, x)
  model.get_layer('c1').trainable = False
  for layer in model.layers[1:]:  # non-zero biases so that the bias path is exercised
    if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
      layer.bias.assign(tf.random.stateless_normal(layer.bias.shape, seed=[5, 6]))
  return model


def test_plain_convnet_equals_the_keras_model_with_its_gradients():
  model = _small_convnet()
  assert hybrid_conv.is_plain_convnet(model)
  images = tf.random.stateless_normal([2, 21, 26, 3], seed=[7, 8])
  upstream = tf.random.stateless_normal(model(images).shape, seed=[9, 9])
  results = []
  for run in (lambda x: model(x, training=False),
              lambda x: hybrid_conv.apply_plain_convnet(model, x),
              lambda x: hybrid_conv.apply_plain_convnet(model, x, 'onednn')):
    with tf.GradientTape() as tape:
      out = run(images)
      loss = tf.reduce_sum(out * upstream)
    results.append((out, tape.gradient(loss, model.trainable_variables)))
  (want, want_grads), *hybrids = results
  assert len(model.trainable_variables) == 3  # c2 kernel, bias; c3 kernel
  for got, got_grads in hybrids:
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    for g, w in zip(got_grads, want_grads):
      np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-3, rtol=1e-4)


def test_which_models_are_plain_convnets():
  assert hybrid_conv.is_plain_convnet(backbones.build_backbone('tiny').features)
  assert not hybrid_conv.is_plain_convnet(backbones.build_backbone('mobilenet_v2').features)
  images = keras.Input((None, None, 3))
  x = keras.layers.Conv2D(4, 3, padding='same')(images)
  y = keras.layers.BatchNormalization()(x)
  assert not hybrid_conv.is_plain_convnet(keras.Model(images, y))
  branch = keras.layers.Conv2D(4, 3, padding='same')(x)
  assert not hybrid_conv.is_plain_convnet(keras.Model(images, keras.layers.Add()([x, branch])))
  assert not hybrid_conv.is_plain_convnet(keras.Model(
      images, keras.layers.Conv2D(4, 3, dilation_rate=2)(images)))
  with pytest.raises(ValueError, match='not a plain chain'):
    hybrid_conv.apply_plain_convnet(keras.Model(images, y), tf.zeros([1, 8, 8, 3]))
