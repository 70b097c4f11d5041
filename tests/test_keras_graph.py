"""keras_graph: the wiring of small hand-made functional models."""

import keras

from faster_rcnn_tf import keras_graph


def _model():
  """x -> conv_a -> relu -> add(relu, conv_b(x)); `shared` applied to conv_a and conv_b."""
  x = keras.Input((8, 8, 3), name='x')
  conv_a = keras.layers.Conv2D(4, 3, padding='same', name='conv_a')
  conv_b = keras.layers.Conv2D(4, 1, name='conv_b')
  relu = keras.layers.ReLU(name='relu')
  add = keras.layers.Add(name='add')
  shared = keras.layers.Conv2D(4, 1, name='shared')
  a = conv_a(x)
  r = relu(a)
  b = conv_b(x)
  out = add([r, b])
  side_a, side_b = shared(a), shared(b)
  model = keras.Model(x, [out, side_a, side_b])
  return model, dict(conv_a=conv_a, conv_b=conv_b, relu=relu, add=add, shared=shared,
                     input=model.get_layer('x'))


def test_inputs_producers_and_consumers():
  _, layers = _model()
  assert keras_graph.input_layers(layers['add']) == [layers['relu'], layers['conv_b']]
  assert [keras_graph.producer_of(t) for t in keras_graph.input_tensors(layers['add'])] == [
      layers['relu'], layers['conv_b']]
  assert keras_graph.input_layers(layers['relu']) == [layers['conv_a']]
  assert keras_graph.sole_producer(layers['relu']) is layers['conv_a']
  assert keras_graph.sole_producer(layers['add']) is None  # two inputs
  # `shared` is called twice on different producers: no sole producer.
  assert keras_graph.input_layers(layers['shared'], call=1) == [layers['conv_b']]
  assert keras_graph.sole_producer(layers['shared']) is None
  assert keras_graph.consumers(layers['conv_a']) == {layers['relu'], layers['shared']}
  assert keras_graph.consumers(layers['relu']) == {layers['add']}
  assert keras_graph.consumers(layers['input']) == {layers['conv_a'], layers['conv_b']}
