"""Helpers for tests of the traced training step: the step itself and its graph's ops."""

import tensorflow as tf


def make_train_step(model, optimizer, jit):
  """tf.function(jit_compile=jit) (batch, seed int32 [2]) -> (losses dict, list of bool:
  whether each trainable variable got a gradient): forward, losses, gradients, update."""

  @tf.function(jit_compile=jit)
  def step(batch, seed):
    with tf.GradientTape() as tape:
      losses = model.compute_losses(batch, seed=seed)
    grads = tape.gradient(losses['total_loss'], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return losses, [g is not None for g in grads]

  return step


def graph_op_types(concrete_fn):
  """Set of op type names in a concrete function's graph and in every function it nests
  (loop bodies, conditionals, map_fn bodies)."""
  graph_def = concrete_fn.graph.as_graph_def()
  ops = {node.op for node in graph_def.node}
  for fn in graph_def.library.function:
    ops |= {node.op for node in fn.node_def}
  return ops
