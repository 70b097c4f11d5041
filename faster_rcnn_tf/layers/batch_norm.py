"""FrozenBatchNormalization: Keras batch normalization whose moving-statistics form runs as
one fused kernel, and that can leave its work to the convolution before it."""

import weakref

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class FrozenBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization with the same variables, config and results.

  Whenever it uses its moving statistics (inference, or a frozen layer, trainable=False,
  called in training), it runs TensorFlow's FusedBatchNormV3: one pass over the
  activations where Keras runs separate element-wise ops, each a pass. Batch statistics
  (a trainable layer called with training=True), masks, other axes or ranks and
  missing center / scale go to Keras' own computation.

  Folded (`fold_into`, done by `batch_norm_folding.fold_batch_norm`): the
  convolution before it computes conv + batch norm in one op whenever the moving
  statistics are used; this layer then passes its input through.

  Call: inputs float [B, H, W, C] (channels last) -> the same shape and dtype.
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._folding_conv = None  # weakref to the conv that applies this layer, or None

  def fold_into(self, conv):
    """Declares that `conv` (a `folded_conv` layer) computes this layer whenever the
    moving statistics are used. A weak reference: the layer's variables stay its own,
    so saved weights and checkpoints keep their structure."""
    self._folding_conv = weakref.ref(conv)

  @property
  def folded(self):
    """Whether a live convolution applies this layer (see `fold_into`)."""
    return self._folding_conv is not None and self._folding_conv() is not None

  def uses_moving_statistics(self, training):
    """True unless this layer normalizes with batch statistics in this call."""
    return not (training and self.trainable)

  def call(self, inputs, training=None, mask=None):
    moving = self.uses_moving_statistics(training)
    if moving and mask is None and self.folded:
      return inputs  # its convolution applied it
    if (not moving or mask is not None or len(inputs.shape) != 4
        or self.axis not in (-1, 3) or not self.center or not self.scale):
      return super().call(inputs, training=training, mask=mask)
    outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
        mean=tf.cast(self.moving_mean, tf.float32),
        variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
        is_training=False)
    return outputs
