"""Backbones: feature extractors (stride 16) and their per-RoI heads, from keras.applications.

Each backbone is described by a `Backbone` tuple:
  features: keras.Model, images [B, H, W, 3] (normalized) -> [B, H/16, W/16, C].
  roi_head: keras.Model, crops [B*R, S, S, C] -> [B*R, D] per-RoI feature vectors.
  normalize: function, float32 RGB pixels in [0, 255] -> the backbone's input scale.
  stride: 16.
  crop_size, crop_max_pool: how RoIs are pooled (see `ops.roi_pooling.crop_pool`).

Names: 'vgg16' (conv5_3, fc6/fc7 4096 with dropout 0.5, 14x14 crops max-pooled to 7x7;
with ImageNet weights fc6/fc7 are the classifier's fc1/fc2, see `_vgg16`), 'resnet50' and
'resnet101' (C4: conv4 features; the conv5 stage, its first block at stride 2, as the RoI
head on direct 14x14 crops: a 7x7 map before the average pool, as detectron2's R50-C4),
'mobilenet_v2' (stride-16 expansion features, a small fc head: the CPU model), 'tiny' (a
few convolutions, for tests and demos), 'tiny_s8' (the same with three downsamplings:
stride 8, for small images such as the built-in shapes; use anchor_base_size=8).

Weights: None (random), 'imagenet' (the Keras download; needs internet) or the path of a
local weights file saved from the same keras.applications model (`model.save_weights`;
for VGG16 the full model with its classifier, or the convolutional part only).
"""

import collections
import os

import keras
import tensorflow as tf
from absl import logging

from faster_rcnn_tf import batch_norm_folding
from faster_rcnn_tf import keras_graph

Backbone = collections.namedtuple(
    'Backbone', ['features', 'roi_head', 'normalize', 'stride', 'crop_size',
                 'crop_max_pool', 'frozen_prefixes'])

NAMES = ('vgg16', 'resnet50', 'resnet101', 'mobilenet_v2', 'tiny', 'tiny_s8')

_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

# Side of the RoI crops fed to the ResNet C4 head (conv5 halves it to 7x7).
RESNET_CROP_SIZE = 14

# Moving-average momentum of trained batch normalization (PyTorch's default, 0.1 there).
TRAINED_BN_MOMENTUM = 0.9


def _caffe_normalize(images):
  """RGB [0, 255] -> BGR minus the ImageNet pixel means (the VGG / ResNet convention)."""
  return tf.reverse(images - tf.constant(_CAFFE_MEAN_RGB, images.dtype), axis=[-1])


def _tanh_normalize(images):
  return images / 127.5 - 1.0


def _resolve_weights(weights, name):
  """keras.applications `weights` argument for a user's --backbone_weights value."""
  if weights in (None, '', 'none'):
    return None, None
  if weights == 'imagenet':
    return 'imagenet', None
  if not os.path.exists(weights):
    raise ValueError(f'--backbone_weights: file {weights!r} for backbone {name!r} does not '
                     "exist (use 'none', 'imagenet' or the path of a weights file)")
  return None, weights


def _fc_head(input_shape, units, dropout, name):
  crops = keras.Input(input_shape)
  x = keras.layers.Flatten()(crops)
  for i, n in enumerate(units):
    x = keras.layers.Dense(n, activation='relu', name=f'fc{6 + i}')(x)
    if dropout:
      x = keras.layers.Dropout(dropout)(x)
  return keras.Model(crops, x, name=name)


def _vgg16(weights):
  """VGG16 to conv5_3 (stride 16) and the reference head: fc6, fc7 (4096, ReLU, dropout 0.5).

  fc6 / fc7 start from the ImageNet classifier's fully connected layers (Keras' `fc1`,
  `fc2` of `VGG16(include_top=True)`: 7x7x512 -> 4096 -> 4096), as in the reference,
  when the weights have them: 'imagenet' (the Keras file with the top) or a local weights
  file saved from the full keras.applications.VGG16. A local file of the convolutional
  part only (include_top=False) still loads; fc6 / fc7 then start random (a warning says
  so). Both heads flatten 7x7x512 crops in the same (row, column, channel) order, so the
  classifier's weights apply unchanged.
  """
  keras_weights, path = _resolve_weights(weights, 'vgg16')
  base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
  head = _fc_head((7, 7, 512), (4096, 4096), 0.5, 'vgg16_roi_head')
  if keras_weights or path:
    classifier = _vgg16_classifier(keras_weights, path)
    if classifier is None:  # a file without the top: the convolutions only
      base.load_weights(path)
      logging.warning('--backbone_weights=%s: no fc1/fc2 in this VGG16 weights file (saved '
                      'with include_top=False); fc6 and fc7 start from random weights', path)
    else:
      for layer in base.layers:
        if layer.weights:
          layer.set_weights(classifier.get_layer(layer.name).get_weights())
      head.get_layer('fc6').set_weights(classifier.get_layer('fc1').get_weights())
      head.get_layer('fc7').set_weights(classifier.get_layer('fc2').get_weights())
      del classifier
  features = keras.Model(base.input, base.get_layer('block5_conv3').output,
                         name='vgg16_features')
  return Backbone(features, head, _caffe_normalize, 16, 7, True, ('block1_', 'block2_'))


def _vgg16_classifier(keras_weights, path):
  """The full keras.applications.VGG16 (224x224 input, with its classifier) holding the
  given weights, or None when the local file `path` lacks the classifier's layers."""
  full = keras.applications.VGG16(include_top=True, weights=keras_weights,
                                  input_shape=(224, 224, 3))
  if path:
    try:
      full.load_weights(path)
    except ValueError:  # Keras names the classifier layers it found no weights for
      return None
  return full


def _resnet(depth, weights):
  name = f'resnet{depth}'
  keras_weights, path = _resolve_weights(weights, name)
  builder = {50: keras.applications.ResNet50, 101: keras.applications.ResNet101}[depth]
  base = builder(include_top=False, weights=keras_weights, input_shape=(None, None, 3))
  if path:
    base.load_weights(path)
  last4 = 'conv4_block6_out' if depth == 50 else 'conv4_block23_out'
  c4 = base.get_layer(last4).output
  features = keras.Model(base.input, c4, name=f'{name}_features')
  # The conv5 stage, re-applied on RoI crops: the C4 head. 14x14 crops through its first
  # block's stride 2 give a 7x7 map before the average pool (detectron2's R50-C4; the
  # reference's 14x14 crops max-pooled to 7x7 with conv5 at stride 1 also give 7x7).
  crops = keras.Input((RESNET_CROP_SIZE, RESNET_CROP_SIZE, 1024))
  x = crops
  layer_outputs = {last4: crops}
  for layer in base.layers:
    if not layer.name.startswith('conv5_'):
      continue
    args = [layer_outputs[p.name] for p in keras_graph.input_layers(layer)]
    x = layer(args if len(args) > 1 else args[0])
    layer_outputs[layer.name] = x
  x = keras.layers.GlobalAveragePooling2D(name='roi_avg_pool')(x)
  head = keras.Model(crops, x, name=f'{name}_roi_head')
  return Backbone(features, head, _caffe_normalize, 16, RESNET_CROP_SIZE, False,
                  ('conv1_', 'conv2_'))


def _mobilenet_v2(weights):
  keras_weights, path = _resolve_weights(weights, 'mobilenet_v2')
  base = keras.applications.MobileNetV2(include_top=False, weights=keras_weights,
                                        input_shape=(None, None, 3))
  if path:
    base.load_weights(path)
  features = keras.Model(base.input, base.get_layer('block_12_add').output,
                         name='mobilenet_v2_features')  # stride 16, 96 channels
  head = _fc_head((7, 7, 96), (1024, 1024), 0.0, 'mobilenet_v2_roi_head')
  return Backbone(features, head, _tanh_normalize, 16, 7, False, ('Conv1', 'bn_Conv1',
                                                                  'expanded_conv_'))


def _tiny(weights, num_stages=4):
  if weights not in (None, '', 'none'):
    _, path = _resolve_weights(weights, 'tiny')
  else:
    path = None
  images = keras.Input((None, None, 3))
  x = images
  for i, ch in enumerate((16, 32, 64, 128)[4 - num_stages:]):
    x = keras.layers.Conv2D(ch, 3, padding='same', activation='relu', name=f'tiny_conv{i}a')(x)
    x = keras.layers.Conv2D(ch, 3, strides=2, padding='same', activation='relu',
                            name=f'tiny_conv{i}b')(x)
  name = 'tiny' if num_stages == 4 else f'tiny_s{2 ** num_stages}'
  features = keras.Model(images, x, name=f'{name}_features')
  if path:
    features.load_weights(path)
  head = _fc_head((7, 7, 128), (256, 256), 0.0, f'{name}_roi_head')
  return Backbone(features, head, _tanh_normalize, 2 ** num_stages, 7, False, ())


def build_backbone(name, weights=None, train_batch_norm=False, fold_batch_norm=True):
  """Builds a backbone by name (see the module docstring); raises ValueError naming it.

  Batch normalization layers are frozen (fixed statistics and affine parameters, as in
  the reference and Detectron): batches of one or two images cannot estimate them, and
  a frozen layer runs in inference mode even when its model is called with training.
  train_batch_norm=True leaves them trainable: a backbone trained from scratch needs
  them (frozen at their initial values they are identities, and MobileNetV2 does not
  learn without them). Their moving-average momentum is then set to
  TRAINED_BN_MOMENTUM: keras.applications' 0.999 remembers the statistics of the
  first thousands of steps' weights, and a model trained for 1500 steps detected
  nothing with them.

  Models with batch normalization are cloned (`batch_norm_folding.fold_batch_norm`,
  weights copied) with `layers.batch_norm.FrozenBatchNormalization` layers: with its
  moving statistics a layer runs TF's fused kernel, one pass over the activations where
  Keras runs several. fold_batch_norm: moreover, a batch norm right after a
  convolution is folded into it (one fused conv instead of a conv and a pass over its
  output; the same result to float rounding). False keeps the separate layers (for
  comparisons).
  """
  net = _build(name, weights)
  models = []
  for model in (net.features, net.roi_head):
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        if train_batch_norm:
          layer.momentum = TRAINED_BN_MOMENTUM
        else:
          layer.trainable = False
    models.append(batch_norm_folding.fold_batch_norm(model, fold=fold_batch_norm))
  return net._replace(features=models[0], roi_head=models[1])


def _build(name, weights):
  if name == 'vgg16':
    return _vgg16(weights)
  if name in ('resnet50', 'resnet101'):
    return _resnet(int(name[6:]), weights)
  if name == 'mobilenet_v2':
    return _mobilenet_v2(weights)
  if name == 'tiny':
    return _tiny(weights)
  if name == 'tiny_s8':
    return _tiny(weights, num_stages=3)
  raise ValueError(f'--backbone: unknown backbone {name!r}; choose one of {", ".join(NAMES)}')


def freeze_layers(model, prefixes):
  """Sets trainable=False on every layer whose name starts with one of `prefixes`."""
  for layer in model.layers:
    if any(layer.name.startswith(p) for p in prefixes):
      layer.trainable = False
