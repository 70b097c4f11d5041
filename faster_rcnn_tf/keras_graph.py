"""Reading the wiring of Keras functional models: which tensors and layers feed a layer,
which layers consume it.

Keras 3 keeps this in private attributes (`_inbound_nodes`, `_outbound_nodes`,
`_keras_history`); the backbone builders, `batch_norm_folding` and `ops.hybrid_conv` read
it through these functions only, so a Keras change breaks one module.
"""


def input_tensors(layer, call=0):
  """The KerasTensors passed to `layer` in its `call`-th call in a functional graph
  (a list, also for one tensor)."""
  tensors = layer._inbound_nodes[call].input_tensors  # pylint: disable=protected-access
  return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def producer_of(tensor):
  """The layer that produced a KerasTensor."""
  return tensor._keras_history[0]  # pylint: disable=protected-access


def input_layers(layer, call=0):
  """The layers whose outputs `layer` takes in its `call`-th call, in argument order."""
  return [producer_of(t) for t in input_tensors(layer, call)]


def sole_producer(layer):
  """The one layer that feeds `layer` (a single input) in every call of it, or None."""
  producers = set()
  for call in range(len(layer._inbound_nodes)):  # pylint: disable=protected-access
    layers = input_layers(layer, call)
    if len(layers) != 1:
      return None
    producers.add(layers[0])
  return producers.pop() if len(producers) == 1 else None


def consumers(layer):
  """The set of layers that take `layer`'s output in some call."""
  return {node.operation for node in layer._outbound_nodes}  # pylint: disable=protected-access
