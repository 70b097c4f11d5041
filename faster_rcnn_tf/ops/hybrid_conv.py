"""Training-time convolutions that take each kernel from the faster of two libraries.

On x86 CPUs (2 AVX-512 cores, fp32, VGG16's shapes at 600x800, measured by
bench/bench_conv_kernels.py; figures in docs/performance.md) XLA runs a
3x3 convolution's forward pass well above oneDNN (TensorFlow's own CPU kernels; up to
twice as fast on 512 channels), while oneDNN runs the filter gradient up to twice as
fast (128 and 256 channels; about even at 512); input gradients are close (see
DEFAULT_INPUT_GRAD_LIBRARY).
Compiling the whole backbone with XLA therefore makes inference fast but training slow:
VGG16's backbone trained 8.9 s whole-XLA, 6.0 s oneDNN, 4.8 s this way. `conv2d` below is one convolution (+ bias + optional
ReLU) whose forward pass and input gradient are XLA-compiled and whose filter gradient
is TensorFlow's `Conv2DBackpropFilter`; `apply_plain_convnet` runs a Keras model made
only of such convolutions and max pooling (VGG16, the tiny backbones) through it.

Inside an XLA-compiled caller (`jit_compile=True`) everything is compiled anyway: the
result is the same function, with the same gradients as the Keras layers.

Tensors: NHWC, any float dtype; kernels [kh, kw, C_in, C_out]; biases [C_out].
"""

import functools

import keras
import tensorflow as tf

from faster_rcnn_tf import keras_graph


def _tf_padding(padding):
  return padding.upper()


@functools.partial(tf.function, jit_compile=True)
def _forward(x, kernel, bias, strides, padding, relu):
  y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides, padding), bias)
  return tf.nn.relu(y) if relu else y


# Which library computes the input gradient (Conv2DBackpropInput): 'onednn' or 'xla'.
# bench/bench_conv_kernels.py compares both: per kernel oneDNN was a little faster on 3-4
# of VGG16's 4 shapes in two runs, but the whole backbone trained in the same time either
# way (4.63 s XLA, 4.68 s oneDNN, interleaved), so XLA (fused with the ReLU mask and the
# bias gradient) stays the default.
INPUT_GRAD_LIBRARIES = ('onednn', 'xla')
DEFAULT_INPUT_GRAD_LIBRARY = 'xla'


def _input_grad(dz, kernel, input_shape, strides, padding):
  return tf.raw_ops.Conv2DBackpropInput(input_sizes=input_shape, filter=kernel,
                                        out_backprop=dz, strides=[1, *strides, 1],
                                        padding=padding)


@functools.partial(tf.function, jit_compile=True)
def _output_grads(y, dy, kernel, input_shape, strides, padding, relu, input_grad):
  """(pre-activation gradient, bias gradient, input gradient or None), XLA-compiled."""
  dz = tf.where(y > 0, dy, tf.zeros_like(dy)) if relu else dy
  db = tf.reduce_sum(dz, axis=[0, 1, 2])
  dx = _input_grad(dz, kernel, input_shape, strides, padding) if input_grad else None
  return dz, db, dx


def conv2d(x, kernel, bias, strides=(1, 1), padding='SAME', relu=True, input_grad=True,
           filter_grad=True, input_grad_library=DEFAULT_INPUT_GRAD_LIBRARY):
  """relu(conv2d(x, kernel) + bias), differentiable, with the kernel split above.

  Args:
    x: [B, H, W, C_in]; kernel: [kh, kw, C_in, C_out]; bias: [C_out].
    strides: (sy, sx); padding: 'SAME' or 'VALID'; relu: apply a ReLU.
    input_grad / filter_grad: False skips the input / kernel gradient when the caller
      knows it is not needed (the first trainable layer / a frozen layer); it is then
      returned as None.
    input_grad_library: 'onednn' (TensorFlow's kernel) or 'xla' (compiled with the
      ReLU mask and bias gradient).
  Returns [B, H', W', C_out].
  """
  if input_grad_library not in INPUT_GRAD_LIBRARIES:
    raise ValueError(f'input_grad_library: {input_grad_library!r} is not one of '
                     f'{INPUT_GRAD_LIBRARIES}')
  strides = tuple(int(s) for s in strides)
  padding = _tf_padding(padding)
  xla_input_grad = input_grad and input_grad_library == 'xla'

  @tf.custom_gradient
  def op(x, kernel, bias):
    y = _forward(x, kernel, bias, strides, padding, relu)

    def grad(dy):
      dz, db, dx = _output_grads(y, dy, kernel, tf.shape(x), strides, padding, relu,
                                 xla_input_grad)
      if input_grad and not xla_input_grad:
        dx = _input_grad(dz, kernel, tf.shape(x), strides, padding)
      dk = None
      if filter_grad:
        dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                             out_backprop=dz, strides=[1, *strides, 1],
                                             padding=padding)
      return dx, dk, db

    return y, grad

  return op(x, kernel, bias)


def _unsupported_reason(layer):
  """Why `apply_plain_convnet` cannot run this layer, or None if it can."""
  if isinstance(layer, keras.layers.InputLayer):
    return None
  if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
    if layer.data_format != 'channels_last':
      return 'channels_first'
    if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
      return 'dilated or grouped'
    if layer.activation not in (keras.activations.relu, keras.activations.linear):
      return f'activation {layer.activation.__name__}'
    return None
  if type(layer) is keras.layers.MaxPooling2D:
    return None if layer.data_format == 'channels_last' else 'channels_first'
  return f'layer type {type(layer).__name__}'


def is_plain_convnet(model):
  """True if `model` is a chain of Conv2D (ReLU or linear) and MaxPooling2D layers."""
  if not isinstance(model, keras.Model) or len(model.inputs) != 1:
    return False
  layers = model.layers
  for prev, layer in zip(layers, layers[1:]):
    if _unsupported_reason(layer) is not None:
      return False
    if keras_graph.input_layers(layer) != [prev]:
      return False
  return _unsupported_reason(layers[0]) is None and model.outputs[0] is layers[-1].output


def apply_plain_convnet(model, x, input_grad_library=DEFAULT_INPUT_GRAD_LIBRARY):
  """Runs `model` (see `is_plain_convnet`) on x [B, H, W, C] with `conv2d`'s kernels.

  Gradients flow to the trainable layers' kernels and biases (frozen layers get none,
  and no input gradient is computed below the first trainable layer).
  """
  if not is_plain_convnet(model):
    raise ValueError(f'{model.name} is not a plain chain of Conv2D and MaxPooling2D layers')
  trainable_below = False
  for layer in model.layers:
    if isinstance(layer, keras.layers.MaxPooling2D):
      x = tf.nn.max_pool2d(x, layer.pool_size, layer.strides, _tf_padding(layer.padding))
    elif isinstance(layer, keras.layers.Conv2D):
      kernel = tf.convert_to_tensor(layer.kernel)
      bias = (tf.convert_to_tensor(layer.bias) if layer.use_bias
              else tf.zeros([kernel.shape[-1]], kernel.dtype))
      x = conv2d(tf.cast(x, kernel.dtype), kernel, bias, layer.strides, layer.padding,
                 relu=layer.activation is keras.activations.relu,
                 input_grad=trainable_below, filter_grad=layer.trainable,
                 input_grad_library=input_grad_library)
      trainable_below = trainable_below or layer.trainable
  return x
