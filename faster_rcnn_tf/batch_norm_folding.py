"""Folding frozen batch normalization into the convolution before it, by cloning a model.

`fold_batch_norm(model)` returns a clone of a Keras functional model in which every
BatchNormalization is a `layers.batch_norm.FrozenBatchNormalization` and every
conv + batch norm pair is a `layers.folded_conv` convolution that computes
BN(conv(x)) as one conv (+ BiasAdd) whenever the batch norm uses its moving statistics
(inference, or a frozen layer); the batch norm then passes its input through. That
removes one pass over every activation tensor, and TF's graph optimizer (grappler's
remapper) can fuse the conv, its BiasAdd and a following Relu / Relu6 into one oneDNN
kernel. A batch norm that normalizes with batch statistics (trainable, called with
training=True: `--train_batch_norm`) makes its pair run as the two Keras layers, so a
model trained with its batch norm infers and exports as fast as one with frozen batch
norm and trains as before.

A ZeroPadding2D whose only consumer is such a conv (VALID) is absorbed: the padding layer
passes its input through and the conv pads itself, with SAME padding when that pads
exactly alike for the input's static size (MobileNetV2's ((0, 1), (0, 1)) before its
stride-2 convs, on even sizes: one copy of the activations fewer), with an explicit Pad
otherwise (odd sizes; unknown ones, unless the caller declares the input size a
multiple of something that makes them all even: `input_size_multiple(32)`, as the
serving module does).

The clone has the same layers in the same order, with the same names, variables and
trainable flags, and the original's weights: tf.train.Checkpoint files (which address
layers by position and variables by attribute name) are interchangeable between folded
and unfolded models. Keras' own weight files address layers by class name, so those
are read back by a model built the same way (folded or not).
"""

import keras

from faster_rcnn_tf import keras_graph
from faster_rcnn_tf.layers.batch_norm import FrozenBatchNormalization
from faster_rcnn_tf.layers.folded_conv import FoldedConv
from faster_rcnn_tf.layers.folded_conv import FoldedConv2D
from faster_rcnn_tf.layers.folded_conv import FoldedDepthwiseConv2D
from faster_rcnn_tf.layers.folded_conv import FoldedZeroPadding2D
from faster_rcnn_tf.layers.folded_conv import folded_kernel_and_bias  # pylint: disable=unused-import
from faster_rcnn_tf.layers.folded_conv import input_size_multiple  # pylint: disable=unused-import
from faster_rcnn_tf.layers.folded_conv import zero_padding_equals_same  # pylint: disable=unused-import

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
_FOLDED_TYPES = {keras.layers.Conv2D: FoldedConv2D,
                 keras.layers.DepthwiseConv2D: FoldedDepthwiseConv2D}


def _foldable(conv, batch_norm):
  return (type(conv) in _FOLDED_TYPES
          and keras_graph.consumers(conv) == {batch_norm}
          and conv.data_format == 'channels_last'
          and getattr(conv, 'groups', 1) == 1
          and conv.activation in (None, keras.activations.linear)
          and batch_norm.axis in (-1, 3) and batch_norm.center and batch_norm.scale)


def find_conv_batch_norm_pairs(model):
  """[(conv layer, batch norm layer)] of `model` that can be folded.

  A pair: a Keras Conv2D or DepthwiseConv2D (channels_last, linear activation, no
  groups) whose output goes only to one BatchNormalization layer over the channel axis,
  in every call.
  """
  pairs = []
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      conv = keras_graph.sole_producer(layer)
      if conv is not None and _foldable(conv, layer):
        pairs.append((conv, layer))
  return pairs


def _absorbable_padding(conv):
  pad = keras_graph.sole_producer(conv)
  if (type(pad) is keras.layers.ZeroPadding2D and keras_graph.consumers(pad) == {conv}
      and pad.data_format == 'channels_last' and conv.padding == 'valid'):
    return pad
  return None


def _input_stride(model, layer):
  """Model-input pixels per pixel of `layer`'s input (MobileNetV2's block_1_pad: 2), from
  a symbolic run at 1024x1024; None when not a whole number or not computable."""
  try:
    upstream = keras.Model(model.inputs, keras_graph.input_tensors(layer)[0])
    spec = upstream.compute_output_spec(
        keras.KerasTensor((1, 1024, 1024) + tuple(model.inputs[0].shape[3:])))
    side = spec.shape[1]
  except Exception:  # pylint: disable=broad-except
    return None
  return 1024 // side if side and 1024 % side == 0 else None


def _copy_weights(source, target):
  for old, new in zip(source.layers, target.layers):
    if old.name != new.name:
      raise ValueError(f'cloning {source.name}: layer {new.name!r} where {old.name!r} was')
    if old.weights:
      new.set_weights(old.get_weights())


def attach_folded_layers(model):
  """Links every folded conv of `model` to its batch norm (and padding) layer by the names
  in its config; returns the number of convs linked. `fold_batch_norm` does it; call it
  on a folded model rebuilt from its config (until then each layer computes what its
  Keras base class computes)."""
  count = 0
  for layer in model.layers:
    if isinstance(layer, FoldedConv) and layer.batch_norm_name:
      padding = model.get_layer(layer.padding_name) if layer.padding_name else None
      layer.attach(model.get_layer(layer.batch_norm_name), padding)
      count += 1
  return count


def fold_batch_norm(model, fold=True):
  """A clone of the functional `model` (its weights copied) with FrozenBatchNormalization
  layers and, if `fold`, folded conv + batch norm pairs (see the module docstring).

  Returns `model` itself when it has no batch normalization. Set trainable flags and
  batch norm momenta before: the clone copies them.
  """
  if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers):
    return model
  folded_convs, absorbed_pads = {}, {}
  if fold:
    for conv, batch_norm in find_conv_batch_norm_pairs(model):
      pad = _absorbable_padding(conv)
      folded_convs[conv.name] = dict(
          batch_norm_name=batch_norm.name, padding_name=pad.name if pad else None,
          input_stride=_input_stride(model, pad) if pad else None)
      if pad is not None:
        absorbed_pads[pad.name] = conv.name

  def clone(layer):
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
      return FrozenBatchNormalization.from_config(config)
    if layer.name in folded_convs:
      return _FOLDED_TYPES[type(layer)].from_config({**config, **folded_convs[layer.name]})
    if layer.name in absorbed_pads:
      return FoldedZeroPadding2D.from_config(config)
    return layer.__class__.from_config(config)

  inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype,
                        name=keras_graph.producer_of(t).name) for t in model.inputs]
  cloned = keras.models.clone_model(
      model, input_tensors=inputs if len(inputs) > 1 else inputs[0], clone_function=clone)
  _copy_weights(model, cloned)
  attach_folded_layers(cloned)
  return cloned
