"""training.trainer.Trainer and training.optimizer's reference rules: one update
against a hand-computed numpy SGD step, with and without loss scaling, and a
mixed_float16 training step of the tiny model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.training import optimizer as optimizer_lib
from faster_rcnn_tf.training.trainer import Trainer


class _LinearModel(keras.Model):
  """pred = x @ kernel + bias; total_loss = mean((pred - y) ** 2), the interface
  Trainer uses (trainable_variables, compute_losses(batch, seed, image_offset))."""

  def __init__(self, kernel, bias):
    super().__init__()
    self.dense = keras.layers.Dense(kernel.shape[1])
    self.dense.build((None, kernel.shape[0]))
    self.dense.kernel.assign(kernel)
    self.dense.bias.assign(bias)

  def compute_losses(self, batch, seed=None, image_offset=0):
    del seed, image_offset
    pred = self.dense(batch['x'])
    return {'total_loss': tf.reduce_mean(tf.square(pred - batch['y']))}


def _numpy_sgd_step(x, y, kernel, bias, lr, weight_decay, bias_multiplier):
  """The first SGD(momentum) step (velocity starts at 0: w <- w - lr * g) of the
  reference rules, gradients by hand: d mean(r^2) / d pred = 2 r / r.size."""
  residual = x @ kernel + bias - y
  d_pred = 2.0 * residual / residual.size
  g_kernel = x.T @ d_pred + weight_decay * kernel
  g_bias = d_pred.sum(axis=0) * bias_multiplier
  return kernel - lr * g_kernel, bias - lr * g_bias


@pytest.mark.parametrize('loss_scale', [None, 1024.0])
def test_one_update_matches_numpy_with_and_without_loss_scaling(loss_scale):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  y = rng.normal(size=(6, 3)).astype(np.float32)
  kernel = rng.normal(size=(4, 3)).astype(np.float32)
  bias = rng.normal(size=(3,)).astype(np.float32)
  lr, weight_decay, bias_multiplier = 0.1, 0.05, 2.0

  model = _LinearModel(kernel, bias)
  opt = keras.optimizers.SGD(lr, momentum=0.9)
  if loss_scale is not None:
    opt = keras.optimizers.LossScaleOptimizer(opt, initial_scale=loss_scale,
                                              dynamic_growth_steps=1000)
  opt.build(model.trainable_variables)
  trainer = Trainer(model, opt, tf.distribute.get_strategy(), weight_decay=weight_decay,
                    bias_lr_multiplier=bias_multiplier)
  trainer.step({'images': tf.constant(x), 'x': tf.constant(x), 'y': tf.constant(y)})

  want_kernel, want_bias = _numpy_sgd_step(x, y, kernel, bias, lr, weight_decay,
                                           bias_multiplier)
  np.testing.assert_allclose(model.dense.kernel.numpy(), want_kernel, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.dense.bias.numpy(), want_bias, rtol=1e-5, atol=1e-6)


def test_decay_term_carries_the_loss_scale():
  variables = [tf.Variable([[2.0]], name='kernel'), tf.Variable([1.0], name='bias')]
  grads = [tf.constant([[8.0]]), tf.constant([4.0])]
  out = optimizer_lib.apply_reference_rules(grads, variables, weight_decay=0.5,
                                            bias_lr_multiplier=2.0,
                                            loss_scale=tf.constant(4.0))
  assert out[0].numpy()[0, 0] == pytest.approx(8.0 + 0.5 * 4.0 * 2.0)
  assert out[1].numpy()[0] == pytest.approx(8.0)


@pytest.mark.parametrize('policy', ['mixed_float16', 'mixed_bfloat16'])
def test_mixed_precision_training_step_of_the_tiny_model(policy):
  """mixed_float16 (train.py --precision=mixed_float16, with loss scaling) and
  mixed_bfloat16 (without): 16-bit compute, float32 variables and losses, finite
  gradients that move every trainable variable."""
  from faster_rcnn_tf.model import FasterRCNN
  from tests.test_model import SMALL, _scene_batch
  keras.mixed_precision.set_global_policy(policy)
  try:
    keras.utils.set_random_seed(0)
    model = FasterRCNN(3, **SMALL)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    if policy == 'mixed_float16':
      opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(model.trainable_variables)
    trainer = Trainer(model, opt, tf.distribute.get_strategy(), weight_decay=1e-4)
    batch, _, _ = _scene_batch()
    features = model.extract_features(batch['images'], batch['image_sizes'])
    before = [v.numpy() for v in model.trainable_variables]
    losses = trainer.step(batch)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert features.dtype == keras.mixed_precision.Policy(policy).compute_dtype
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  assert all(np.isfinite(float(v)) for v in losses.values()), losses
  assert float(losses['total_loss']) > 0
  moved = [not np.array_equal(b, v.numpy())
           for b, v in zip(before, model.trainable_variables)]
  assert all(moved), [v.path for v, m in zip(model.trainable_variables, moved) if not m]
