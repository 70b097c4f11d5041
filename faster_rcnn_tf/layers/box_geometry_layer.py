"""The base of the layers that compute box geometry (anchor and proposal targets,
proposals, detections): float32 under any Keras dtype policy."""

import keras


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class BoxGeometryLayer(keras.layers.Layer):
  """A Keras layer whose dtype policy defaults to float32, not to the global policy:
  under mixed_float16 box coordinates of ~1000 px would be off by up to half a pixel.
  Keras casts floating inputs to the layer's compute dtype, so 16-bit head outputs
  arrive as float32. A `dtype` given explicitly still wins."""

  def __init__(self, **kwargs):
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
