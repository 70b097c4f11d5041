"""layers.box_geometry_layer: the geometry layers compute in float32 under any policy."""

import keras
import pytest
import tensorflow as tf

from faster_rcnn_tf.layers.anchor_targets import AnchorTargets
from faster_rcnn_tf.layers.box_geometry_layer import BoxGeometryLayer
from faster_rcnn_tf.layers.detection_generator import DetectionGenerator
from faster_rcnn_tf.layers.proposal_layer import ProposalLayer
from faster_rcnn_tf.layers.proposal_targets import ProposalTargets


@pytest.mark.parametrize('policy', ['mixed_float16', 'mixed_bfloat16'])
def test_float32_under_mixed_policies_and_explicit_dtype_wins(policy):
  keras.mixed_precision.set_global_policy(policy)
  try:
    layers = [AnchorTargets(), DetectionGenerator(), ProposalLayer(),
              ProposalTargets(num_classes=3)]
    explicit = BoxGeometryLayer(dtype='float64')
    head = keras.layers.Dense(2)  # an ordinary layer follows the global policy
  finally:
    keras.mixed_precision.set_global_policy('float32')
  for layer in layers:
    assert isinstance(layer, BoxGeometryLayer)
    assert layer.compute_dtype == 'float32', type(layer).__name__
  assert explicit.compute_dtype == 'float64'
  assert head.compute_dtype == keras.mixed_precision.Policy(policy).compute_dtype
  # Keras casts 16-bit inputs up to the layer's compute dtype.
  probe = BoxGeometryLayer()
  probe.call = lambda x: x
  assert probe(tf.constant([1.5], tf.float16)).dtype == tf.float32
