"""Folding frozen batch normalization into the convolution before it.

A convolution followed by batch normalization with fixed statistics is one convolution:

  BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)

with s broadcast over the kernel's output-channel axis (Conv2D kernels [kh, kw, in, out]:
the last axis; DepthwiseConv2D kernels [kh, kw, in, multiplier]: output channel
c * multiplier + m scales kernel[..., c, m]). `fold_frozen_batch_norm` rewires the layer
pairs of a Keras model in place so that, whenever the batch norm layer is frozen
(`trainable=False`: it then always uses its moving statistics), the convolution computes
the folded form with TF's own conv + BiasAdd ops and the batch norm passes its input
through. That removes one pass over every activation tensor, and TF's graph optimizer
(grappler's remapper) can fuse the conv, its BiasAdd and a following Relu / Relu6 into one
oneDNN kernel. The weights stay the model's variables (the fold is recomputed from them on
every call: a few small ops on the weights), so checkpoints, training of the convolution
kernels (gradients flow through W * s) and exported SavedModels are unchanged.

A ZeroPadding2D whose only consumer is such a conv (VALID) is absorbed too when, for the
input's static size, it pads exactly as SAME would (MobileNetV2's ((0, 1), (0, 1)) before
its stride-2 convs, on even sizes): the padding layer passes its input through and the
conv pads itself, one copy of the activations fewer. Odd sizes keep the Pad; so do
unknown ones (SavedModel signatures), unless the caller declares the input size a
multiple of something that makes them all even (`input_size_multiple(32)`: the serving
module does).

A pair whose batch norm is trainable at call time runs the layers' original calls, so
`--train_batch_norm` (batch statistics in training) is not affected; inside
`moving_statistics()` (the caller runs the model in inference mode) trainable batch norm
is folded too, so a model trained with its batch norm infers and exports as fast as one
with frozen batch norm.

Caveat: a rewired batch norm (or padding) layer called on its own, outside its model, is
an identity while folded: its conv did its work. Build with
`backbones.build_backbone(fold_batch_norm=False)` to reuse the layers one by one.
"""

import contextlib
import functools
import threading

import keras
import tensorflow as tf

from faster_rcnn_tf import keras_graph

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)

_STATE = threading.local()  # .moving_statistics, .input_size_multiple: the contexts below


@contextlib.contextmanager
def moving_statistics():
  """Within it, every rewired pair is folded, trainable batch norm included: the caller
  promises to call the model in inference mode (training=False), where batch norm uses
  its moving statistics anyway. Per thread; nests."""
  previous = getattr(_STATE, 'moving_statistics', False)
  _STATE.moving_statistics = True
  try:
    yield
  finally:
    _STATE.moving_statistics = previous


@contextlib.contextmanager
def input_size_multiple(multiple):
  """Within it, the model's input height and width are known to be multiples of
  `multiple` (the serving preprocess pads to 32), so a ZeroPadding2D whose input size is
  unknown at trace time is absorbed when every such size pads as SAME would. Per
  thread; nests."""
  previous = getattr(_STATE, 'input_size_multiple', None)
  _STATE.input_size_multiple = int(multiple)
  try:
    yield
  finally:
    _STATE.input_size_multiple = previous


def _folds(batch_norm):
  """Whether a rewired pair computes the folded form in the current call."""
  return not batch_norm.trainable or getattr(_STATE, 'moving_statistics', False)


def _foldable(conv, batch_norm):
  return (isinstance(conv, _CONV_TYPES)
          and type(conv).call in (keras.layers.Conv2D.call, keras.layers.DepthwiseConv2D.call)
          and keras_graph.consumers(conv) == {batch_norm}
          and conv.data_format == 'channels_last'
          and getattr(conv, 'groups', 1) == 1
          and conv.activation in (None, keras.activations.linear)
          and batch_norm.axis in (-1, 3) and batch_norm.center and batch_norm.scale)


def find_conv_batch_norm_pairs(model):
  """[(conv layer, batch norm layer)] of `model` that can be folded.

  A pair: a Conv2D or DepthwiseConv2D (channels_last, linear activation, no groups) whose
  output goes only to one BatchNormalization layer over the channel axis, in every call.
  """
  pairs = []
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      conv = keras_graph.sole_producer(layer)
      if conv is not None and _foldable(conv, layer):
        pairs.append((conv, layer))
  return pairs


def folded_kernel_and_bias(conv, batch_norm):
  """The folded conv's (kernel, bias): float32 tensors, kernel shaped like conv.kernel,
  bias [output channels]."""
  scale = (tf.cast(batch_norm.gamma, tf.float32)
           * tf.math.rsqrt(tf.cast(batch_norm.moving_variance, tf.float32)
                           + batch_norm.epsilon))
  shift = (tf.cast(batch_norm.beta, tf.float32)
           - tf.cast(batch_norm.moving_mean, tf.float32) * scale)
  kernel = tf.cast(conv.kernel, tf.float32)
  if isinstance(conv, keras.layers.DepthwiseConv2D):
    kernel = kernel * tf.reshape(scale, tf.shape(kernel)[2:])
  else:
    kernel = kernel * scale
  if conv.use_bias:
    shift = shift + tf.cast(conv.bias, tf.float32) * scale
  return kernel, shift


def _folded_conv_call(conv, batch_norm, padding_state, inputs):
  """Conv2D / DepthwiseConv2D call: the folded form while `batch_norm` is frozen (or
  inside moving_statistics()); SAME padding when the ZeroPadding2D before it passed its
  input through (padding_state.absorbed, set by `_absorbing_padding_call`)."""
  padding = conv.padding.upper()
  if padding_state is not None and getattr(padding_state, 'absorbed', False):
    padding_state.absorbed = False
    padding = 'SAME'
  if _folds(batch_norm):
    kernel, bias = folded_kernel_and_bias(conv, batch_norm)
  elif padding == conv.padding.upper():
    return type(conv).call(conv, inputs)
  else:  # batch statistics in use, padding absorbed: the plain conv with SAME padding
    kernel, bias = conv.kernel, conv.bias if conv.use_bias else None
  kernel = tf.cast(kernel, inputs.dtype)
  strides = (1,) + tuple(conv.strides) + (1,)
  if isinstance(conv, keras.layers.DepthwiseConv2D):
    outputs = tf.nn.depthwise_conv2d(inputs, kernel, strides, padding,
                                     dilations=tuple(conv.dilation_rate))
  else:
    outputs = tf.nn.conv2d(inputs, kernel, strides, padding,
                           dilations=(1,) + tuple(conv.dilation_rate) + (1,))
  if bias is None:
    return outputs
  return tf.nn.bias_add(outputs, tf.cast(bias, inputs.dtype))


def zero_padding_equals_same(padding, input_shape, conv):
  """Whether ZeroPadding2D(padding) followed by `conv` (VALID) computes what `conv` with
  SAME padding computes on an input of static shape [B, H, W, C] (H, W None: unknown,
  False). MobileNetV2's ((0, 1), (0, 1)) before its stride-2 3x3 convs: true for even H
  and W."""
  if conv.padding != 'valid' or tuple(conv.dilation_rate) != (1, 1):
    return False
  for size, (before, after), kernel, stride in zip(
      tuple(input_shape)[1:3], padding, conv.kernel_size, conv.strides):
    if size is None:
      return False
    out_same = -(-size // stride)
    same_before = max((out_same - 1) * stride + kernel - size, 0) // 2
    out_valid = (size + before + after - kernel) // stride + 1
    if before != same_before or out_valid != out_same:
      return False
  return True


def _shape_for_padding_check(input_shape, conv, input_stride):
  """input_shape with unknown H / W replaced by a size that stands for all the sizes
  input_size_multiple() allows, when they all pad alike (conv's stride divides their
  common step); unknown otherwise."""
  multiple = getattr(_STATE, 'input_size_multiple', None)
  shape = list(input_shape)
  for axis, stride in zip((1, 2), conv.strides):
    if shape[axis] is not None:
      continue
    if multiple and input_stride and multiple % input_stride == 0:
      step = multiple // input_stride  # the padding layer's input sizes: multiples of it
      if step % stride == 0:
        shape[axis] = step * (1 + max(conv.kernel_size))  # any multiple pads the same
  return shape


def _absorbing_padding_call(pad, conv, padding_state, call_before_folding, input_stride,
                            inputs):
  """ZeroPadding2D call: identity when `conv` can pad the same way itself (SAME), which
  saves a copy of the activations; the padded tensor otherwise."""
  shape = _shape_for_padding_check(inputs.shape, conv, input_stride)
  padding_state.absorbed = zero_padding_equals_same(pad.padding, shape, conv)
  if padding_state.absorbed:
    return inputs
  return call_before_folding(inputs)


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


def _folded_batch_norm_call(batch_norm, call_before_folding, inputs, training=None,
                            mask=None):
  """BatchNormalization call: identity while folded (its conv applied it)."""
  if not _folds(batch_norm) or mask is not None:
    return call_before_folding(inputs, training=training, mask=mask)
  return inputs


def fold_frozen_batch_norm(model):
  """Rewires `model`'s conv + batch norm pairs in place (see the module docstring).

  Call after the batch norm layers' `call` is final (it is kept and used while a batch
  norm layer is trainable). Only the layers' `call` methods change (closures: no new
  tracked state, so checkpoints keep their structure). Returns the number of pairs
  rewired; a second call rewires nothing more.
  """
  count = 0
  for conv, batch_norm in find_conv_batch_norm_pairs(model):
    if getattr(conv.call, 'folds_batch_norm', False):
      continue
    pad = keras_graph.sole_producer(conv)
    padding_state = None
    if (isinstance(pad, keras.layers.ZeroPadding2D) and keras_graph.consumers(pad) == {conv}
        and pad.data_format == 'channels_last' and conv.padding == 'valid'):
      padding_state = threading.local()
      pad.call = functools.partial(_absorbing_padding_call, pad, conv, padding_state,
                                   pad.call, _input_stride(model, pad))
    conv_call = functools.partial(_folded_conv_call, conv, batch_norm, padding_state)
    conv_call.folds_batch_norm = True
    conv.call = conv_call
    batch_norm.call = functools.partial(_folded_batch_norm_call, batch_norm,
                                        batch_norm.call)
    count += 1
  return count
