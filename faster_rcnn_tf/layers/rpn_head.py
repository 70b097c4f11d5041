"""RPN head: a 3x3 conv + ReLU, then 1x1 convs for objectness logits and box deltas."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class RPNHead(keras.layers.Layer):
  """Per-cell anchor scores and deltas.

  Call: features [B, Hf, Wf, C] ->
    logits [B, Hf * Wf * A, 2] (background, foreground) and
    deltas [B, Hf * Wf * A, 4] (dy, dx, dh, dw), in the (row, column, anchor) order of
    `ops.anchors.tile_anchors`.
  """

  def __init__(self, num_anchors=9, channels=512, **kwargs):
    super().__init__(**kwargs)
    self.num_anchors = num_anchors
    self.channels = channels
    init = keras.initializers.RandomNormal(stddev=0.01)
    self.conv = keras.layers.Conv2D(channels, 3, padding='same', activation='relu',
                                    kernel_initializer=init, name='rpn_conv')
    self.cls = keras.layers.Conv2D(num_anchors * 2, 1, kernel_initializer=init,
                                   name='rpn_cls_score')
    self.box = keras.layers.Conv2D(num_anchors * 4, 1, kernel_initializer=init,
                                   name='rpn_bbox_pred')

  def build(self, input_shape):
    self.conv.build(input_shape)
    mid = tuple(input_shape[:-1]) + (self.channels,)
    self.cls.build(mid)
    self.box.build(mid)

  def call(self, features):
    x = self.conv(features)
    batch = tf.shape(features)[0]
    logits = tf.reshape(self.cls(x), [batch, -1, 2])
    deltas = tf.reshape(self.box(x), [batch, -1, 4])
    return logits, deltas

  def get_config(self):
    config = super().get_config()
    config.update(num_anchors=self.num_anchors, channels=self.channels)
    return config
