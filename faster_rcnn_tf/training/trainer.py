"""The training step, one implementation for train.py's loop (`Trainer`) and Keras' own
(`FasterRCNN.train_step`, which runs `TrainingStep`).

Under a tf.distribute strategy the global batch is split across replicas; each replica
computes its losses on its share (normalized per replica as in the reference) and its
gradients are divided by the number of replicas, so the all-reduced update equals that
of one device on the global batch when every image samples the same number of anchors
and RoIs (the usual case). Sampling uses stateless seeds (seed, step, global image
index), so it is identical whatever the replica layout. Weight decay is added per
replica as weight_decay / replicas, since the optimizer sums the replicas' gradients.

On one replica the update (weight decay, bias rule, optimizer) is one XLA-compiled
function: for VGG16's 120M weights XLA fuses the element-wise passes over memory that
TensorFlow runs one op at a time.
"""

import keras
import tensorflow as tf

from faster_rcnn_tf.training import optimizer as optimizer_lib


class TrainingStep:
  """One replica's training step: losses, gradients, the reference rules, the update.

  Args:
    model: a FasterRCNN (or any model with `compute_losses(batch, seed, image_offset)`
      returning a dict with 'total_loss', and `trainable_variables`).
    optimizer: a keras optimizer built for the model's trainable variables, possibly a
      keras.optimizers.LossScaleOptimizer.
    strategy: the tf.distribute.Strategy the step runs under (replica count, TPU).
    seed: int, the run's seed (sampling keys are derived from it and the optimizer's
      iteration count).
    weight_decay, bias_lr_multiplier: see `optimizer.apply_reference_rules`.
    jit_compile: compile the forward and backward pass with XLA.
    fused_update: XLA-compile the update where that is possible (one replica, no loss
      scaling, no TPU); False always runs it as plain TensorFlow ops.

  Call (inside the strategy's replica context, i.e. under `strategy.run` or as a Keras
  `train_step`): batch (the `inputs` batch dict, this replica's share) -> dict of
  float32 scalar losses (see `model.LOSS_NAMES`), after one optimizer update.

  With a LossScaleOptimizer the loss is multiplied by the optimizer's dynamic scale
  before the gradient, and the weight decay term added to the (scaled) gradients is
  scaled alike, so that the optimizer's unscaling leaves exactly
  gradient + weight_decay * w.
  """

  def __init__(self, model, optimizer, strategy=None, seed=0, weight_decay=1e-4,
               bias_lr_multiplier=1.0, jit_compile=False, fused_update=True):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy or tf.distribute.get_strategy()
    self.seed = seed
    self.weight_decay = weight_decay
    self.bias_lr_multiplier = bias_lr_multiplier
    self._grads_fn = tf.function(self._losses_and_grads, jit_compile=jit_compile)
    self.fused_update = bool(
        fused_update and self.strategy.num_replicas_in_sync == 1
        and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        and not isinstance(self.strategy, tf.distribute.TPUStrategy))
    self._update_fn = (tf.function(self._apply_update, jit_compile=True)
                       if self.fused_update else self._apply_update)

  def _losses_and_grads(self, batch, step, image_offset):
    variables = self.model.trainable_variables
    num_replicas = self.strategy.num_replicas_in_sync
    with tf.GradientTape() as tape:
      losses = self.model.compute_losses(
          batch, seed=tf.stack([tf.constant(self.seed, tf.int32), tf.cast(step, tf.int32)]),
          image_offset=image_offset)
      loss = losses['total_loss'] / num_replicas
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        loss = self.optimizer.scale_loss(loss)
    grads = tape.gradient(loss, variables)
    return losses, grads

  def _apply_update(self, grads):
    variables = self.model.trainable_variables
    loss_scale = None
    if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
      loss_scale = self.optimizer.scale_loss(tf.constant(1.0))  # grads carry it
    grads = optimizer_lib.apply_reference_rules(
        grads, variables, self.weight_decay / self.strategy.num_replicas_in_sync,
        self.bias_lr_multiplier, loss_scale=loss_scale)
    self.optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, variables) if g is not None])

  def __call__(self, batch):
    ctx = tf.distribute.get_replica_context()
    local_batch = tf.shape(batch['images'])[0]
    offset = ctx.replica_id_in_sync_group * local_batch
    losses, grads = self._grads_fn(batch, tf.convert_to_tensor(self.optimizer.iterations),
                                   offset)
    self._update_fn(grads)
    return losses


class Trainer:
  """train.py's training step over a whole (distributed) batch: `TrainingStep` on every
  replica, losses averaged over the replicas.

  Args:
    model: a FasterRCNN built under `strategy.scope()`.
    optimizer: a keras optimizer built under the same scope.
    strategy: a tf.distribute.Strategy.
    seed, weight_decay, bias_lr_multiplier, jit_compile, fused_update: see
      `TrainingStep`.
  """

  def __init__(self, model, optimizer, strategy, seed=0, weight_decay=1e-4,
               bias_lr_multiplier=1.0, jit_compile=False, fused_update=True):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy
    self.replica_step = TrainingStep(model, optimizer, strategy, seed, weight_decay,
                                     bias_lr_multiplier, jit_compile, fused_update)
    self.fused_update = self.replica_step.fused_update
    self._step_fn = tf.function(self._distributed_step)

  def _distributed_step(self, batch):
    per_replica = self.strategy.run(self.replica_step, args=(batch,))
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()}

  def step(self, batch):
    """Runs one training step on a (distributed) batch; returns the mean losses."""
    return self._step_fn(batch)
