"""Whether the graph being traced will be compiled by XLA.

Code that picks between a TF kernel and a form XLA compiles well (crop pooling), or that
relies on TensorFlow's executor running independent ops at once (sub-batches), asks this
while tracing. TensorFlow keeps the answer in a private helper (its XLA control-flow
context, entered by `tf.function(jit_compile=True)` and by TPU replication); this module
is the one place that reads it.
"""

import tensorflow as tf


def in_xla_compilation(if_unknown):
  """True while tracing inside an XLA-compiled function, False outside one.

  if_unknown: returned when TensorFlow's private helper has moved (the caller's safe
  choice: crop pooling takes the form that works under XLA, batch splitting does not
  count on XLA).
  """
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=import-outside-toplevel
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
  except (ImportError, AttributeError):
    return if_unknown
