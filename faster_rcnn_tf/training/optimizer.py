"""The reference solver: SGD with momentum, step-decayed learning rate with optional
linear warm-up, weight decay on weights only, an optional doubled bias learning rate and
optional gradient clipping."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class StepDecayWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = base * factor ** (number of boundaries <= step), linearly warmed up.

  During the first `warmup_steps` steps the rate rises linearly from
  base * warmup_factor to the scheduled value.
  """

  def __init__(self, base_lr, boundaries=(), factor=0.1, warmup_steps=0, warmup_factor=0.1):
    self.base_lr = float(base_lr)
    self.boundaries = tuple(int(b) for b in boundaries)
    self.factor = float(factor)
    self.warmup_steps = int(warmup_steps)
    self.warmup_factor = float(warmup_factor)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    num_decays = tf.zeros([], tf.float32)
    for b in self.boundaries:
      num_decays += tf.cast(step >= b, tf.float32)
    lr = self.base_lr * tf.pow(self.factor, num_decays)
    if self.warmup_steps > 0:
      alpha = tf.minimum(step / self.warmup_steps, 1.0)
      lr *= self.warmup_factor + (1.0 - self.warmup_factor) * alpha
    return lr

  def get_config(self):
    return dict(base_lr=self.base_lr, boundaries=self.boundaries, factor=self.factor,
                warmup_steps=self.warmup_steps, warmup_factor=self.warmup_factor)


def is_decayed(variable):
  """Weight decay applies to kernels, not to biases or normalization parameters."""
  name = variable.name.split('/')[-1].split(':')[0]
  return name in ('kernel', 'depthwise_kernel', 'embeddings')


def is_bias(variable):
  return variable.name.split('/')[-1].split(':')[0] == 'bias'


OPTIMIZERS = ('sgd', 'adam')


def build_optimizer(learning_rate, momentum=0.9, boundaries=(), decay_factor=0.1,
                    warmup_steps=0, clip_norm=0.0, name='sgd'):
  """An optimizer on a `StepDecayWithWarmup` schedule (clip_norm 0: no clipping).

  name: 'sgd' (the reference: SGD with `momentum`) or 'adam' (beta_1 = `momentum`;
  handy for training small models from scratch, as the quickstart does; Adam is
  invariant to gradient scale, so a bias learning-rate multiplier has no effect on it).
  """
  schedule = StepDecayWithWarmup(learning_rate, boundaries, decay_factor, warmup_steps)
  clip = clip_norm if clip_norm > 0 else None
  if name == 'sgd':
    return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum,
                                global_clipnorm=clip)
  if name == 'adam':
    return keras.optimizers.Adam(learning_rate=schedule, beta_1=momentum,
                                 global_clipnorm=clip)
  raise ValueError(f'--optimizer: unknown optimizer {name!r}; choose one of '
                   f'{", ".join(OPTIMIZERS)}')


def apply_reference_rules(grads, variables, weight_decay=1e-4, bias_lr_multiplier=1.0,
                          loss_scale=None):
  """Adds L2 weight decay (weight_decay * w, the gradient of weight_decay / 2 * |w|^2) to
  kernels and scales bias gradients (the doubled bias learning rate of the reference,
  exact for plain SGD with momentum). Returns the new gradient list (None kept).

  loss_scale: None, or the scale (a float32 scalar tensor, e.g. a LossScaleOptimizer's
  `dynamic_scale`) that `grads` carry because the loss was multiplied by it; the decay
  term is multiplied by it too, so that it survives the optimizer's unscaling intact.
  """
  decay = weight_decay
  if weight_decay and loss_scale is not None:
    decay = weight_decay * loss_scale
  out = []
  for g, v in zip(grads, variables):
    if g is None:
      out.append(g)
      continue
    if weight_decay and is_decayed(v):
      g = g + tf.cast(decay, g.dtype) * tf.cast(v, g.dtype)
    elif bias_lr_multiplier != 1.0 and is_bias(v):
      g = g * bias_lr_multiplier
    out.append(g)
  return out
