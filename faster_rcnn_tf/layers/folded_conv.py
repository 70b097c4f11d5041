"""Convolutions that apply the batch normalization after them (and absorb the zero padding
before them): the layers `batch_norm_folding.fold_batch_norm` swaps into a model.

A convolution followed by batch normalization with fixed statistics is one convolution:

  BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)

with s broadcast over the kernel's output-channel axis (Conv2D kernels [kh, kw, in, out]:
the last axis; DepthwiseConv2D kernels [kh, kw, in, multiplier]: output channel
c * multiplier + m scales kernel[..., c, m]). The fold is recomputed from the variables on
every call (a few small ops on the weights), so training of the kernels, saved weights and
exported SavedModels are unchanged.

The layers here keep the variables and config of the Keras layers they replace; the link
between a conv and its batch norm (and padding) layer is a weak reference made by
`FoldedConv.attach`, after the model is built. Unattached, each layer computes exactly
what its Keras base class computes.

Tensors: NHWC, any float dtype.
"""

import contextlib
import threading
import weakref

import keras
import tensorflow as tf

_DECLARED = threading.local()  # .input_size_multiple: see input_size_multiple()


@contextlib.contextmanager
def input_size_multiple(multiple):
  """Declares, while tracing inside it, that the model's input height and width are
  multiples of `multiple` (the serving preprocess pads to 32), so that a zero padding
  whose input size is unknown at trace time is absorbed when every such size pads as
  SAME would. A trace-time declaration (per thread; nests); layers keep no state."""
  previous = getattr(_DECLARED, 'value', None)
  _DECLARED.value = int(multiple)
  try:
    yield
  finally:
    _DECLARED.value = previous


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


def shape_for_padding_check(input_shape, conv, input_stride):
  """input_shape with unknown H / W replaced by a size that stands for all the sizes
  `input_size_multiple` declares, when they all pad alike (the conv's stride divides
  their common step); unknown otherwise. input_stride: model-input pixels per pixel of
  the padding's input (None: unknown)."""
  multiple = getattr(_DECLARED, 'value', None)
  shape = list(input_shape)
  for axis, stride in zip((1, 2), conv.strides):
    if shape[axis] is not None:
      continue
    if multiple and input_stride and multiple % input_stride == 0:
      step = multiple // input_stride  # the padding layer's input sizes: multiples of it
      if step % stride == 0:
        shape[axis] = step * (1 + max(conv.kernel_size))  # any multiple pads the same
  return shape


def _live(reference):
  return reference() if reference is not None else None


class FoldedConv:
  """Mixin of the folded convolution layers (config: the Keras layer's plus
  batch_norm_name, padding_name: the names of the layers `attach` links, and
  input_stride: model-input pixels per pixel of the padding layer's input, or None).

  Call: inputs [B, H, W, C] (the padding layer's input when a padding is attached),
  training -> the conv output, batch-normalized when the attached batch norm uses its
  moving statistics in this call (the batch norm then passes it through).
  """

  def __init__(self, *args, batch_norm_name=None, padding_name=None, input_stride=None,
               **kwargs):
    super().__init__(*args, **kwargs)  # the Keras conv class after this mixin
    self.batch_norm_name = batch_norm_name
    self.padding_name = padding_name
    self.input_stride = input_stride
    self._batch_norm = None
    self._padding = None

  def attach(self, batch_norm, padding=None):
    """Links this conv to the FrozenBatchNormalization after it and, optionally, the
    FoldedZeroPadding2D before it (weak references, both ways)."""
    self._batch_norm = weakref.ref(batch_norm)
    batch_norm.fold_into(self)
    if padding is not None:
      self._padding = weakref.ref(padding)
      padding.absorb_into(self)

  def call(self, inputs, training=None):
    return self._folded_call(inputs, training, super().call)

  def get_config(self):
    return {**super().get_config(), 'batch_norm_name': self.batch_norm_name,
            'padding_name': self.padding_name, 'input_stride': self.input_stride}

  def _folded_call(self, inputs, training, keras_call):
    batch_norm = _live(self._batch_norm)
    pad = _live(self._padding)
    padding = self.padding.upper()
    if pad is not None:  # the padding layer passed its input through
      shape = shape_for_padding_check(inputs.shape, self, self.input_stride)
      if zero_padding_equals_same(pad.padding, shape, self):
        padding = 'SAME'
      else:
        (top, bottom), (left, right) = pad.padding
        inputs = tf.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
    if batch_norm is not None and batch_norm.uses_moving_statistics(training):
      kernel, bias = folded_kernel_and_bias(self, batch_norm)
    elif padding == self.padding.upper():
      return keras_call(inputs)
    else:  # batch statistics in use, padding absorbed: the plain conv with SAME padding
      kernel, bias = self.kernel, self.bias if self.use_bias else None
    kernel = tf.cast(kernel, inputs.dtype)
    strides = (1,) + tuple(self.strides) + (1,)
    if isinstance(self, keras.layers.DepthwiseConv2D):
      outputs = tf.nn.depthwise_conv2d(inputs, kernel, strides, padding,
                                       dilations=tuple(self.dilation_rate))
    else:
      outputs = tf.nn.conv2d(inputs, kernel, strides, padding,
                             dilations=(1,) + tuple(self.dilation_rate) + (1,))
    if bias is None:
      return outputs
    return tf.nn.bias_add(outputs, tf.cast(bias, inputs.dtype))


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class FoldedConv2D(FoldedConv, keras.layers.Conv2D):
  """keras.layers.Conv2D (linear activation) that applies its batch norm (see FoldedConv)."""


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class FoldedDepthwiseConv2D(FoldedConv, keras.layers.DepthwiseConv2D):
  """keras.layers.DepthwiseConv2D that applies its batch norm (see FoldedConv)."""


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class FoldedZeroPadding2D(keras.layers.ZeroPadding2D):
  """keras.layers.ZeroPadding2D that, once its only consumer pads for it (`absorb_into`),
  passes its input through: the conv then pads itself (SAME padding where that pads
  alike, saving a copy of the activations)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._absorbing_conv = None

  def absorb_into(self, conv):
    self._absorbing_conv = weakref.ref(conv)

  def call(self, inputs):
    if _live(self._absorbing_conv) is not None:
      return inputs
    return super().call(inputs)
