"""VGG16's fc6 / fc7 come from a full keras.applications.VGG16's classifier (fc1 / fc2).

One test: the full model (138M weights, a 550 MB weights file) is built and saved once.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import backbones


def test_fc6_fc7_and_convs_load_from_a_full_vgg16_weights_file(tmp_path, caplog):
  keras.utils.set_random_seed(11)
  full = keras.applications.VGG16(weights=None, include_top=True, input_shape=(224, 224, 3))
  path = str(tmp_path / 'vgg16_full.weights.h5')
  full.save_weights(path)
  net = backbones.build_backbone('vgg16', path)

  convs = [layer for layer in full.layers if isinstance(layer, keras.layers.Conv2D)]
  assert len(convs) == 13
  for layer in convs:
    mine = net.features.get_layer(layer.name)
    for a, b in zip(layer.get_weights(), mine.get_weights()):
      np.testing.assert_array_equal(a, b)
  for ours, theirs in (('fc6', 'fc1'), ('fc7', 'fc2')):
    got = net.roi_head.get_layer(ours).get_weights()
    want = full.get_layer(theirs).get_weights()
    assert [w.shape for w in got] == [w.shape for w in want]
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)
  # The reference head's dropout is kept (0.5 after fc6 and after fc7).
  rates = [layer.rate for layer in net.roi_head.layers
           if isinstance(layer, keras.layers.Dropout)]
  assert rates == [0.5, 0.5]

  # Same flatten order: on a 7x7x512 map our head gives the classifier's fc2 activations.
  pool5 = tf.random.stateless_uniform([2, 7, 7, 512], seed=[1, 3])
  x = full.get_layer('flatten')(pool5)
  want = full.get_layer('fc2')(full.get_layer('fc1')(x)).numpy()
  np.testing.assert_allclose(net.roi_head(pool5, training=False).numpy(), want,
                             rtol=1e-4, atol=1e-4)
  del full

  # A file of the convolutional part only still loads; fc6 / fc7 stay random, with a warning.
  no_top = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
  no_top.set_weights(net.features.get_weights()[:len(no_top.get_weights())])
  path = str(tmp_path / 'vgg16_no_top.weights.h5')
  no_top.save_weights(path)
  again = backbones.build_backbone('vgg16', path)
  for a, b in zip(again.features.get_weights(), no_top.get_weights()):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(again.roi_head.get_layer('fc6').get_weights()[0],
                            net.roi_head.get_layer('fc6').get_weights()[0])
  assert any('fc6 and fc7 start from random weights' in r.getMessage()
             for r in caplog.records)


if __name__ == '__main__':
  pytest.main([__file__])
