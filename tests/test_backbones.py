"""Tests of faster_rcnn_tf.backbones (random weights: no download)."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import backbones


@functools.lru_cache(maxsize=None)
def _built(name):
  """Each backbone is built once per test session (vgg16's fc6 alone has 100M weights)."""
  return backbones.build_backbone(name, None)


@pytest.mark.parametrize('name,stride,channels,head_dim,crop_size,max_pool', [
    ('tiny', 16, 128, 256, 7, False),
    ('tiny_s8', 8, 128, 256, 7, False),
    ('mobilenet_v2', 16, 96, 1024, 7, False),
    ('resnet50', 16, 1024, 2048, 14, False),
    ('vgg16', 16, 512, 4096, 7, True),
])
def test_backbone_builds_with_its_stride(name, stride, channels, head_dim, crop_size,
                                         max_pool):
  net = _built(name)
  assert net.stride == stride and net.crop_size == crop_size
  assert net.crop_max_pool == max_pool
  images = tf.random.stateless_uniform([1, 64, 80, 3], seed=[1, 2], maxval=255.0)
  features = net.features(net.normalize(images), training=False)
  assert tuple(features.shape) == (1, 64 // stride, 80 // stride, channels)
  crops = tf.random.stateless_normal([2, crop_size, crop_size, channels], seed=[3, 4])
  out = net.roi_head(crops, training=False)
  assert tuple(out.shape) == (2, head_dim)
  assert net.roi_head.output_shape[-1] == head_dim
  assert np.all(np.isfinite(out.numpy()))


def test_normalizers():
  net = _built('vgg16')
  pixel = tf.constant([[[[123.68, 116.779, 103.939]]]])
  np.testing.assert_allclose(net.normalize(pixel).numpy(), 0.0, atol=1e-4)
  # Caffe convention: BGR order after mean subtraction.
  red = tf.constant([[[[223.68, 116.779, 103.939]]]])
  np.testing.assert_allclose(net.normalize(red).numpy()[0, 0, 0], [0.0, 0.0, 100.0], atol=1e-4)
  tiny = _built('tiny')
  np.testing.assert_allclose(tiny.normalize(tf.constant([0.0, 127.5, 255.0])).numpy(),
                             [-1.0, 0.0, 1.0])


def test_resnet_head_is_the_conv5_stage():
  net = _built('resnet50')
  names = [layer.name for layer in net.roi_head.layers]
  assert 'conv5_block1_0_conv' in names and 'conv5_block3_out' in names
  assert not any(n.startswith('conv4_') for n in names)
  # 3 blocks of 3 convs, plus the first block's shortcut conv.
  assert sum(n.startswith('conv5_') and n.endswith('_conv') for n in names) == 10


def test_resnet_head_runs_conv5_at_7x7_on_14x14_crops():
  """detectron2's R50-C4: 14x14 crops, conv5's first block at stride 2, a 7x7 map before
  the average pool; the pooled vector is that map's mean."""
  net = _built('resnet50')
  head = net.roi_head
  assert tuple(head.input_shape) == (None, 14, 14, 1024)
  pool = head.get_layer('roi_avg_pool')
  before_pool = keras.Model(head.input, pool.input)
  assert tuple(before_pool.output_shape) == (None, 7, 7, 2048)
  crops = tf.random.stateless_normal([2, 14, 14, 1024], seed=[7, 8])
  conv5 = before_pool(crops, training=False).numpy()
  assert conv5.shape == (2, 7, 7, 2048)
  np.testing.assert_allclose(head(crops, training=False).numpy(), conv5.mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-5)
  # The first block's convs at stride 2 (1x1 conv1 and the shortcut), the rest at 1.
  strides = {layer.name: layer.strides for layer in head.layers
             if isinstance(layer, keras.layers.Conv2D)}
  assert strides['conv5_block1_0_conv'] == (2, 2) and strides['conv5_block1_1_conv'] == (2, 2)
  assert all(s == (1, 1) for n, s in strides.items() if not n.startswith('conv5_block1_'))


@pytest.mark.parametrize('name', ['resnet50', 'mobilenet_v2'])
def test_batch_normalization_is_frozen(name):
  net = _built(name)
  bns = [layer for model in (net.features, net.roi_head) for layer in model.layers
         if isinstance(layer, keras.layers.BatchNormalization)]
  assert bns and not any(layer.trainable for layer in bns)
  # A frozen BN layer uses its moving statistics even when called with training=True.
  x = tf.random.stateless_normal([2, 64, 64, 3], seed=[5, 5])
  np.testing.assert_allclose(net.features(x, training=True).numpy(),
                             net.features(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_trained_batch_normalization_is_trainable_with_a_short_memory():
  net = backbones.build_backbone('mobilenet_v2', None, train_batch_norm=True)
  bns = [layer for layer in net.features.layers
         if isinstance(layer, keras.layers.BatchNormalization)]
  assert bns and all(layer.trainable for layer in bns)
  assert {layer.momentum for layer in bns} == {backbones.TRAINED_BN_MOMENTUM}
  # 0.9: after 50 training steps the first batches weigh 0.9 ** 50 < 1%.
  assert backbones.TRAINED_BN_MOMENTUM ** 50 < 0.01


@pytest.mark.parametrize('train_batch_norm', [False, True])
def test_batch_norm_uses_the_fused_op_with_the_same_result(train_batch_norm):
  """Inference-mode batch norm runs as FusedBatchNormV3 and equals the numpy formula;
  a trained layer in training mode still uses its batch statistics (Keras' own call)."""
  # Unfolded: a folded frozen layer leaves its work to the conv before it (see
  # test_batch_norm_folding.py).
  net = backbones.build_backbone('mobilenet_v2', None, train_batch_norm=train_batch_norm,
                                 fold_batch_norm=False)
  layer = net.features.get_layer('block_3_expand_BN')
  channels = layer.gamma.shape[0]
  rng = np.random.default_rng(4)
  for var, value in ((layer.gamma, rng.uniform(0.5, 2.0, channels)),
                     (layer.beta, rng.normal(size=channels)),
                     (layer.moving_mean, rng.normal(size=channels)),
                     (layer.moving_variance, rng.uniform(0.1, 3.0, channels))):
    var.assign(value.astype(np.float32))
  x = rng.normal(1.0, 2.0, size=(2, 5, 6, channels)).astype(np.float32)
  want = ((x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
          * layer.gamma.numpy() + layer.beta.numpy())
  graph = tf.function(lambda t: layer(t, training=False)).get_concrete_function(
      tf.TensorSpec(x.shape, tf.float32)).graph
  assert 'FusedBatchNormV3' in {op.type for op in graph.get_operations()}
  np.testing.assert_allclose(layer(x, training=False).numpy(), want, rtol=1e-5, atol=1e-5)
  batch_mean = x.mean(axis=(0, 1, 2))
  out = layer(x, training=True).numpy()
  if train_batch_norm:  # normalized with the batch's own statistics
    np.testing.assert_allclose(((out - layer.beta.numpy()) / layer.gamma.numpy()).mean(
        axis=(0, 1, 2)), np.zeros(channels), atol=1e-4)
    assert not np.allclose(batch_mean, 0.0, atol=0.1)
  else:  # frozen: the moving statistics even in training mode
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_unknown_backbone_raises_naming_it():
  with pytest.raises(ValueError, match='resnet9000'):
    backbones.build_backbone('resnet9000')


@pytest.mark.parametrize('name', ['tiny', 'vgg16'])
def test_missing_weights_file_raises_naming_the_path(name, tmp_path):
  path = str(tmp_path / 'no_such_weights.weights.h5')
  with pytest.raises(ValueError, match='no_such_weights.weights.h5'):
    backbones.build_backbone(name, path)


def test_tiny_weights_file_round_trip(tmp_path):
  net = backbones.build_backbone('tiny', None)
  path = str(tmp_path / 'tiny.weights.h5')
  net.features.save_weights(path)
  again = backbones.build_backbone('tiny', path)
  for a, b in zip(net.features.get_weights(), again.features.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_freeze_layers():
  net = _built('vgg16')
  backbones.freeze_layers(net.features, net.frozen_prefixes)
  for layer in net.features.layers:
    frozen = layer.name.startswith(('block1_', 'block2_'))
    assert layer.trainable == (not frozen), layer.name


def test_weights_file_lands_in_the_cloned_batch_norm_backbone(tmp_path):
  """A MobileNetV2 weights file (batch norm statistics included) is loaded before the
  backbone is cloned with its folded / frozen layers: the clone carries it."""
  base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                        input_shape=(None, None, 3))
  rng = np.random.default_rng(8)
  bn = base.get_layer('block_5_project_BN')
  bn.moving_mean.assign(rng.normal(size=bn.moving_mean.shape).astype(np.float32))
  conv = base.get_layer('block_5_depthwise')
  conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype(np.float32))
  path = str(tmp_path / 'mobilenet.weights.h5')
  base.save_weights(path)
  net = backbones.build_backbone('mobilenet_v2', path)
  clone_bn = net.features.get_layer('block_5_project_BN')
  assert type(clone_bn).__name__ == 'FrozenBatchNormalization' and clone_bn.folded
  np.testing.assert_array_equal(clone_bn.moving_mean.numpy(), bn.moving_mean.numpy())
  np.testing.assert_array_equal(net.features.get_layer('block_5_depthwise').kernel.numpy(),
                                conv.kernel.numpy())
