"""Tests of faster_rcnn_tf.batch_norm_folding: folded conv + frozen batch norm against a
numpy convolution and the batch norm formula, gradients, trainable batch norm, weights."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import backbones, batch_norm_folding


def _np_same_pads(size, kernel, stride):
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2


def _np_conv(x, kernel, stride, padding, depthwise=False):
  """Plain-loop NHWC convolution: x [B, H, W, C]; kernel [kh, kw, C, O] (depthwise:
  [kh, kw, C, M], output channel c * M + m)."""
  b, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  if padding == 'same':
    oh, ph = _np_same_pads(h, kh, stride)
    ow, pw = _np_same_pads(w, kw, stride)
  else:
    oh, ow, ph, pw = (h - kh) // stride + 1, (w - kw) // stride + 1, 0, 0
  xp = np.zeros((b, h + 2 * kh, w + 2 * kw, c), np.float64)
  xp[:, ph:ph + h, pw:pw + w] = x
  outs = []
  for i in range(oh):
    row = []
    for j in range(ow):
      patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]  # [B, kh, kw, C]
      if depthwise:
        row.append(np.einsum('bhwc,hwcm->bcm', patch, kernel).reshape(b, -1))
      else:
        row.append(np.einsum('bhwc,hwco->bo', patch, kernel))
    outs.append(np.stack(row, axis=1))
  return np.stack(outs, axis=1)


def _np_batch_norm(x, layer):
  return ((x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy()
                                                   + layer.epsilon)
          * layer.gamma.numpy() + layer.beta.numpy())


def _randomize_batch_norm(model, seed):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
      layer.beta.assign(rng.normal(size=n).astype(np.float32))
      layer.moving_mean.assign(rng.normal(size=n).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype(np.float32))


def _with_frozen_random_batch_norm(model, seed):
  _randomize_batch_norm(model, seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.trainable = False
  return model


def _small_model(seed=0):
  """conv (stride 2, SAME, bias) -> BN -> ReLU6 -> depthwise (x2, VALID) -> BN -> 1x1
  conv -> BN, with frozen, randomized batch norm."""
  keras.utils.set_random_seed(seed)
  images = keras.Input((9, 11, 3))
  x = keras.layers.Conv2D(4, 3, strides=2, padding='same', name='conv_a')(images)
  x = keras.layers.BatchNormalization(name='bn_a')(x)
  x = keras.layers.ReLU(6.0)(x)
  x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False,
                                   name='dw_b')(x)
  x = keras.layers.BatchNormalization(name='bn_b')(x)
  x = keras.layers.Conv2D(5, 1, use_bias=False, name='conv_c')(x)
  x = keras.layers.BatchNormalization(name='bn_c')(x)
  return _with_frozen_random_batch_norm(keras.Model(images, x), seed)


def _np_small_model(model, x):
  get = model.get_layer
  y = _np_conv(x, get('conv_a').kernel.numpy(), 2, 'same') + get('conv_a').bias.numpy()
  y = np.clip(_np_batch_norm(y, get('bn_a')), 0.0, 6.0)
  y = _np_batch_norm(_np_conv(y, get('dw_b').kernel.numpy(), 1, 'valid', depthwise=True),
                     get('bn_b'))
  return _np_batch_norm(_np_conv(y, get('conv_c').kernel.numpy(), 1, 'valid'), get('bn_c'))


def _images(seed=1):
  return np.random.default_rng(seed).normal(size=(2, 9, 11, 3)).astype(np.float32)


def _folded(model):
  """fold_batch_norm's clone of `model`, checked to link all of `model`'s pairs."""
  pairs = batch_norm_folding.find_conv_batch_norm_pairs(model)
  folded = batch_norm_folding.fold_batch_norm(model)
  assert batch_norm_folding.attach_folded_layers(folded) == len(pairs)
  return folded


def test_folded_model_equals_numpy_conv_and_batch_norm():
  original = _small_model()
  assert len(batch_norm_folding.find_conv_batch_norm_pairs(original)) == 3
  model = batch_norm_folding.fold_batch_norm(original)
  x = _images()
  want = _np_small_model(model, x.astype(np.float64))
  np.testing.assert_allclose(_np_small_model(original, x.astype(np.float64)), want)
  for training in (False, True):  # frozen batch norm: moving statistics either way
    np.testing.assert_allclose(model(x, training=training).numpy(), want,
                               rtol=1e-4, atol=1e-4)
  assert batch_norm_folding.find_conv_batch_norm_pairs(model) == []  # already folded


def test_folding_swaps_layer_classes_and_replaces_no_call():
  """Real layer classes, cloned in; no instance has its own `call` attribute."""
  original = _small_model()
  model = batch_norm_folding.fold_batch_norm(original)
  types = {layer.name: type(layer).__name__ for layer in model.layers}
  assert types['conv_a'] == 'FoldedConv2D' and types['dw_b'] == 'FoldedDepthwiseConv2D'
  assert types['bn_a'] == 'FrozenBatchNormalization'
  assert [layer.name for layer in model.layers] == [layer.name for layer in original.layers]
  for layer in list(model.layers) + list(original.layers):
    assert 'call' not in vars(layer), layer.name


def test_folded_graph_has_no_batch_norm_pass():
  model = _folded(_small_model())
  graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
      tf.TensorSpec([2, 9, 11, 3], tf.float32)).graph
  types = [op.type for op in graph.get_operations()]
  assert not any(t.startswith('FusedBatchNorm') for t in types)
  assert 'Rsqrt' in types  # the fold, computed from the variables
  assert types.count('BiasAdd') == 3  # one per folded conv; the convs' own biases folded


def test_folded_kernel_gradients_equal_unfolded_ones():
  unfolded, folded = _small_model(), _small_model()
  folded.set_weights(unfolded.get_weights())
  folded = _folded(folded)
  x = _images()

  def grads(model):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.sin(model(x, training=True)))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]

  names = [w.path for w in folded.trainable_weights]
  assert names == [w.path for w in unfolded.trainable_weights]
  assert len(names) == 4  # conv_a kernel and bias, dw_b and conv_c kernels
  for name, a, b in zip(names, grads(folded), grads(unfolded)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4, err_msg=name)


def test_trainable_batch_norm_is_not_folded_and_uses_batch_statistics():
  model = _folded(_small_model())
  bn_c = model.get_layer('bn_c')
  bn_c.trainable = True
  x = _images()
  out = model(x, training=True).numpy()
  # Normalized with the batch's own statistics: per-channel mean is beta.
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), bn_c.beta.numpy(), atol=1e-4)
  # Inference mode: the moving statistics, through the layers' own (unfolded) calls.
  np.testing.assert_allclose(model(x, training=False).numpy(),
                             _np_small_model(model, x.astype(np.float64)),
                             rtol=1e-4, atol=1e-4)


def test_weights_and_checkpoints_are_unchanged(tmp_path):
  """Same weight paths; a tf.train.Checkpoint of the plain Keras model restores into the
  folded clone and back (checkpoints address layers by position and attribute); Keras
  weight files round-trip between folded models."""
  plain, folded = _small_model(), _folded(_small_model(seed=3))
  assert [w.path for w in folded.weights] == [w.path for w in plain.weights]
  x = _images()
  want = _np_small_model(plain, x.astype(np.float64))
  path = tf.train.Checkpoint(model=plain).save(str(tmp_path / 'plain' / 'ckpt'))
  assert ([name for name, _ in tf.train.list_variables(path)]
          == [name for name, _ in tf.train.list_variables(
              tf.train.Checkpoint(model=folded).save(str(tmp_path / 'folded' / 'ckpt')))])
  tf.train.Checkpoint(model=folded).restore(path).assert_consumed()
  np.testing.assert_allclose(folded(x).numpy(), want, rtol=1e-4, atol=1e-4)
  weights_path = str(tmp_path / 'folded.weights.h5')
  folded.save_weights(weights_path)
  again = _folded(_small_model(seed=5))
  again.load_weights(weights_path)
  np.testing.assert_allclose(again(x).numpy(), want, rtol=1e-4, atol=1e-4)


def test_pairs_need_a_conv_whose_only_consumer_is_the_batch_norm():
  keras.utils.set_random_seed(0)
  images = keras.Input((8, 8, 3))
  conv = keras.layers.Conv2D(4, 3, padding='same', name='shared_conv')(images)
  normalized = keras.layers.BatchNormalization(name='bn')(conv)
  both = keras.layers.Add()([conv, normalized])  # the conv's raw output is used too
  activated = keras.layers.Conv2D(4, 1, activation='relu', name='relu_conv')(both)
  out = keras.layers.BatchNormalization(name='bn_after_activation')(activated)
  model = keras.Model(images, out)
  assert batch_norm_folding.find_conv_batch_norm_pairs(model) == []


@pytest.mark.parametrize('name', ['mobilenet_v2', 'resnet50'])
def test_backbones_fold_every_conv_batch_norm_pair_with_the_same_result(name):
  plain = backbones.build_backbone(name, None, fold_batch_norm=False)
  folded = backbones.build_backbone(name, None)
  for model in (plain.features, plain.roi_head):
    _randomize_batch_norm(model, 7)
  folded.features.set_weights(plain.features.get_weights())
  folded.roi_head.set_weights(plain.roi_head.get_weights())
  for model in (folded.features, folded.roi_head):
    batch_norms = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.folded for layer in batch_norms)  # all of them
    assert batch_norm_folding.attach_folded_layers(model) == len(batch_norms)
  assert any(isinstance(layer, keras.layers.BatchNormalization)
             for layer in folded.features.layers)
  x = tf.random.stateless_uniform([1, 64, 96, 3], seed=[1, 2], minval=-1.0, maxval=1.0)
  want = plain.features(x, training=False).numpy()
  got = folded.features(x, training=False).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
  side = plain.crop_size
  crops = tf.random.stateless_normal([2, side, side, want.shape[-1]], seed=[3, 4])
  want = plain.roi_head(crops, training=False).numpy()
  np.testing.assert_allclose(folded.roi_head(crops, training=False).numpy(), want,
                             rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_trainable_batch_norm_is_folded_in_inference_mode():
  model = _folded(_small_model())
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.trainable = True
  x = _images()
  graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
      tf.TensorSpec(x.shape, tf.float32)).graph
  got = model(x, training=False).numpy()
  assert not any(op.type.startswith('FusedBatchNorm') for op in graph.get_operations())
  np.testing.assert_allclose(got, _np_small_model(model, x.astype(np.float64)),
                             rtol=1e-4, atol=1e-4)
  # In training mode trainable batch norm is Keras' (batch statistics).
  out = model(x, training=True).numpy()
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), model.get_layer('bn_c').beta.numpy(),
                             atol=1e-4)


def test_model_folds_trained_batch_norm_for_inference_only():
  from faster_rcnn_tf.model import FasterRCNN
  model = FasterRCNN(3, backbone='mobilenet_v2', train_batch_norm=True, rpn_channels=32)
  images = tf.TensorSpec([1, 64, 64, 3], tf.float32)
  sizes = tf.TensorSpec([1, 2], tf.int32)

  def op_types(training):
    fn = tf.function(lambda i, s: model.extract_features(i, s, training=training))
    return {op.type for op in fn.get_concrete_function(images, sizes).graph.get_operations()}

  inference_ops = op_types(False)
  assert not any(t.startswith('FusedBatchNorm') for t in inference_ops)
  assert 'Mean' not in inference_ops
  assert 'Mean' in op_types(True)  # Keras' batch statistics: moments over the batch


def test_folded_model_exports_and_serves_the_same_detections(tmp_path):
  """A SavedModel of a folded MobileNetV2 model: no batch norm op in it, and the same
  detections as the unfolded model in this process."""
  from faster_rcnn_tf.model import FasterRCNN
  from faster_rcnn_tf.serving import export_module
  # One copy of the model in the graph (no sub-batches), so that Pad ops count per model.
  kwargs = dict(backbone='mobilenet_v2', rpn_channels=32, test_post_nms_topk=20,
                score_threshold=0.0, inference_splits=1)
  keras.utils.set_random_seed(0)
  folded = FasterRCNN(3, **kwargs)
  unfolded = FasterRCNN(3, fold_batch_norm=False, **kwargs)
  _randomize_batch_norm(folded.backbone, 9)
  images = tf.constant(np.random.default_rng(2).integers(0, 255, (2, 96, 128, 3)),
                       tf.uint8)
  module = export_module.DetectionModule(folded, ('a', 'b', 'c'), 96, 128)
  module.signatures()  # builds the model's weights
  reference = export_module.DetectionModule(unfolded, ('a', 'b', 'c'), 96, 128)
  reference.signatures()
  unfolded.set_weights(folded.get_weights())
  tf.saved_model.save(module, str(tmp_path), signatures=module.signatures())
  signature = tf.saved_model.load(str(tmp_path)).signatures['detect_images']
  graph = signature.graph.as_graph_def()
  op_types = {n.op for n in graph.node}
  for function in graph.library.function:
    op_types |= {n.op for n in function.node_def}
  assert 'DepthwiseConv2dNative' in op_types and 'Rsqrt' in op_types
  assert not any('BatchNorm' in t for t in op_types)

  def pad_count(graph_def):
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return sum(n.op in ('Pad', 'PadV2') for n in nodes)
  # The serving module pads its input to a multiple of 32: MobileNetV2's three
  # ZeroPadding2D layers (blocks 1, 3, 6) become the convs' own SAME padding.
  reference_graph = reference.signatures()['detect_images'].graph.as_graph_def()
  assert pad_count(reference_graph) - pad_count(graph) == 3
  (key,) = signature.structured_input_signature[1]
  served = signature(**{key: images})
  want = reference.signatures()['detect_images'](images)
  np.testing.assert_array_equal(served['num_detections'].numpy(),
                                want['num_detections'].numpy())
  # Order-free (near-equal scores may swap places after float rounding): sorted scores,
  # and every served box has a reference box of the same image within 0.01 pixel.
  np.testing.assert_allclose(np.sort(served['detection_scores'].numpy(), axis=1),
                             np.sort(want['detection_scores'].numpy(), axis=1),
                             rtol=1e-3, atol=1e-4)
  for got_boxes, want_boxes in zip(served['detection_boxes'].numpy(),
                                   want['detection_boxes'].numpy()):
    distance = np.abs(got_boxes[:, None, :] - want_boxes[None, :, :]).max(axis=-1)
    assert distance.min(axis=1).max() < 1e-2


def _conv_layer(kernel, strides, padding='valid'):
  layer = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding=padding)
  layer.build((None, None, None, 2))
  return layer


def test_zero_padding_equals_same_by_hand():
  stride2 = _conv_layer(3, 2)
  # MobileNetV2's padding before a stride-2 3x3 conv: SAME pads 0 before, 1 after on even
  # sizes (out n/2), but 1 and 1 on odd ones.
  assert batch_norm_folding.zero_padding_equals_same(((0, 1), (0, 1)), (1, 8, 6, 2), stride2)
  assert not batch_norm_folding.zero_padding_equals_same(((0, 1), (0, 1)), (1, 7, 6, 2),
                                                         stride2)
  assert batch_norm_folding.zero_padding_equals_same(((1, 1), (1, 1)), (1, 7, 9, 2), stride2)
  assert not batch_norm_folding.zero_padding_equals_same(((0, 1), (0, 1)), (1, None, 6, 2),
                                                         stride2)
  stride1 = _conv_layer(3, 1)  # SAME pads 1 and 1
  assert batch_norm_folding.zero_padding_equals_same(((1, 1), (1, 1)), (1, 5, 4, 2), stride1)
  assert not batch_norm_folding.zero_padding_equals_same(((0, 2), (1, 1)), (1, 5, 4, 2),
                                                         stride1)
  assert not batch_norm_folding.zero_padding_equals_same(((1, 1), (1, 1)), (1, 5, 4, 2),
                                                         _conv_layer(3, 1, 'same'))


def _padded_model(seed=0):
  """1x1 conv -> BN -> ReLU6 -> ZeroPadding2D((0, 1), (0, 1)) -> 3x3 stride-2 depthwise
  (VALID) -> BN, as in MobileNetV2's downsampling blocks; any input size."""
  keras.utils.set_random_seed(seed)
  images = keras.Input((None, None, 3))
  x = keras.layers.Conv2D(4, 1, use_bias=False, name='expand')(images)
  x = keras.layers.BatchNormalization(name='bn_expand')(x)
  x = keras.layers.ReLU(6.0)(x)
  x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name='pad')(x)
  x = keras.layers.DepthwiseConv2D(3, strides=2, use_bias=False, name='dw')(x)
  x = keras.layers.BatchNormalization(name='bn_dw')(x)
  return _with_frozen_random_batch_norm(keras.Model(images, x), seed)


def _np_padded_model(model, x):
  get = model.get_layer
  y = _np_batch_norm(_np_conv(x, get('expand').kernel.numpy(), 1, 'valid'), get('bn_expand'))
  y = np.pad(np.clip(y, 0.0, 6.0), ((0, 0), (0, 1), (0, 1), (0, 0)))
  return _np_batch_norm(_np_conv(y, get('dw').kernel.numpy(), 2, 'valid', depthwise=True),
                        get('bn_dw'))


@pytest.mark.parametrize('height,width,absorbed', [(8, 10, True), (7, 10, False)])
def test_zero_padding_is_absorbed_on_even_sizes_only(height, width, absorbed):
  model = _folded(_padded_model())
  assert model.get_layer('dw').padding_name == 'pad'
  x = np.random.default_rng(5).normal(size=(2, height, width, 3)).astype(np.float32)
  graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
      tf.TensorSpec(x.shape, tf.float32)).graph
  pads = [op for op in graph.get_operations() if op.type in ('Pad', 'PadV2')]
  assert (not pads) == absorbed
  np.testing.assert_allclose(model(x, training=False).numpy(),
                             _np_padded_model(model, x.astype(np.float64)),
                             rtol=1e-4, atol=1e-4)


def test_absorbed_padding_with_batch_statistics_equals_keras():
  folded, plain = _folded(_padded_model()), _padded_model()
  for model in (folded, plain):
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = True
  x = np.random.default_rng(6).normal(size=(2, 8, 10, 3)).astype(np.float32)
  np.testing.assert_allclose(folded(x, training=True).numpy(),
                             plain(x, training=True).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('multiple,absorbed', [(None, False), (4, True), (2, True),
                                                (3, False)])
def test_unknown_sizes_pad_alike_under_a_declared_input_multiple(multiple, absorbed):
  """The padded model's pad sees the input's own size (1x1 conv, stride 1): multiples of
  2 are all even, so absorbed; multiples of 3 may be odd; no declaration: kept."""
  model = _folded(_padded_model())
  context = (batch_norm_folding.input_size_multiple(multiple) if multiple
             else contextlib.nullcontext())
  fn = tf.function(lambda t: model(t, training=False))
  with context:
    graph = fn.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32)).graph
  pads = [op for op in graph.get_operations() if op.type in ('Pad', 'PadV2')]
  assert (not pads) == absorbed
  x = np.random.default_rng(7).normal(size=(2, 12, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(fn(x).numpy(), _np_padded_model(model, x.astype(np.float64)),
                             rtol=1e-4, atol=1e-4)


def test_mobilenet_padding_strides():
  net = backbones.build_backbone('mobilenet_v2', None)
  strides = {layer.padding_name: layer.input_stride for layer in net.features.layers
             if getattr(layer, 'padding_name', None)}
  assert strides == {'block_1_pad': 2, 'block_3_pad': 4, 'block_6_pad': 8}
