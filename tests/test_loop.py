"""training.loop.train_loop in-process: updates against numpy, checkpoints and resuming,
evaluation and the best checkpoint, a NaN stop, stop_after_steps, and the tiny detector."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.training import checkpoints
from faster_rcnn_tf.training import loop
# pred = x @ kernel + bias, loss mean((pred - y) ** 2): what the trainer needs of a model.
from tests.test_trainer import _LinearModel

LR, DECAY, STEPS = 0.1, 0.01, 5


def _data(steps, nan_at=None):
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(steps, 4, 3)).astype(np.float32)
  ys = rng.normal(size=(steps, 4, 2)).astype(np.float32)
  if nan_at is not None:
    ys[nan_at - 1] = np.nan
  return xs, ys


def _dataset(xs, ys):
  return tf.data.Dataset.from_tensor_slices({'images': xs, 'x': xs, 'y': ys})


def _init():
  rng = np.random.default_rng(1)
  return (rng.normal(size=(3, 2)).astype(np.float32),
          rng.normal(size=(2,)).astype(np.float32))


def _numpy_sgd(xs, ys, kernel, bias, steps):
  """Plain SGD with L2 decay on the kernel: w <- w - lr * (dL/dw + decay * w)."""
  kernel, bias = kernel.copy(), bias.copy()
  for x, y in list(zip(xs, ys))[:steps]:
    residual = x @ kernel + bias - y
    d_pred = 2.0 * residual / residual.size
    kernel = kernel - LR * (x.T @ d_pred + DECAY * kernel)
    bias = bias - LR * d_pred.sum(axis=0)
  return kernel, bias


def _setup(model_dir, keep=10):
  model = _LinearModel(*_init())
  opt = keras.optimizers.SGD(LR)
  opt.build(model.trainable_variables)
  keeper = checkpoints.CheckpointKeeper(
      model_dir, tf.train.Checkpoint(model=model, optimizer=opt), keep)
  return model, opt, keeper


def _run(model, opt, keeper, dataset, num_steps, **kwargs):
  kwargs.setdefault('checkpoint_every', 2)
  lines = []
  result = loop.train_loop(model, opt, tf.distribute.get_strategy(), dataset, num_steps,
                           keeper=keeper, weight_decay=DECAY, log_every=1,
                           summary_writer=None, handle_sigterm=False,
                           print_fn=lines.append, **kwargs)
  return result, lines


def test_updates_checkpoints_and_resume_equal_one_numpy_run(tmp_path):
  xs, ys = _data(STEPS)
  model, opt, keeper = _setup(str(tmp_path))
  evaluated = []

  def evaluate(step):  # a metric that peaks at step 2: best/ keeps that checkpoint
    evaluated.append(step)
    return {2: 0.9, 4: 0.5}.get(step)

  result, lines = _run(model, opt, keeper, _dataset(xs, ys).take(3), 3, evaluate=evaluate,
                       eval_every=2)
  assert result.status == loop.DONE and result.step == 3 and result.last_saved == 3
  assert [s for s, _ in result.history] == [1, 2, 3]
  assert list(result.history[0][1]) == ['total_loss']
  assert evaluated == [2] and result.evaluations == [(2, 0.9)]
  assert any('step 2: voc07_map@0.5 0.9000' in line for line in lines), lines
  assert tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths == [
      str(tmp_path / 'ckpt-2'), str(tmp_path / 'ckpt-3')]
  with open(tmp_path / 'best' / 'best.json') as f:
    assert json.load(f) == {'metric': 'voc07_map@0.5', 'value': 0.9, 'step': 2}

  # A new process would rebuild everything and restore the latest checkpoint.
  model, opt, keeper = _setup(str(tmp_path))
  assert keeper.restore_latest() == str(tmp_path / 'ckpt-3')
  assert int(opt.iterations.numpy()) == 3
  result, _ = _run(model, opt, keeper, _dataset(xs, ys).skip(3), STEPS, resumed_from=3,
                   evaluate=evaluate, eval_every=2)
  assert [s for s, _ in result.history] == [4, 5] and result.step == STEPS
  assert evaluated == [2, 4]
  with open(tmp_path / 'best' / 'best.json') as f:
    assert json.load(f)['step'] == 2                  # 0.5 at step 4 is not better
  want_kernel, want_bias = _numpy_sgd(xs, ys, *_init(), STEPS)
  np.testing.assert_allclose(model.dense.kernel.numpy(), want_kernel, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.dense.bias.numpy(), want_bias, rtol=1e-5, atol=1e-6)
  reader = tf.train.load_checkpoint(str(tmp_path / f'ckpt-{STEPS}'))
  [kernel_key] = [k for k in reader.get_variable_to_shape_map()
                  if k.startswith('model/') and 'kernel' in k and 'OPTIMIZER' not in k]
  np.testing.assert_allclose(reader.get_tensor(kernel_key), want_kernel, rtol=1e-5,
                             atol=1e-6)


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  xs, ys = _data(STEPS, nan_at=3)
  model, opt, keeper = _setup(str(tmp_path))
  result, lines = _run(model, opt, keeper, _dataset(xs, ys), STEPS)
  assert result.status == loop.NONFINITE and result.step == 3 and result.last_saved == 2
  assert 'step 3: loss total_loss is nan' in result.message
  assert 'step 2) is kept' in result.message and any('Stopping' in line for line in lines)
  assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / 'ckpt-2')


def test_stop_after_steps_writes_no_final_checkpoint(tmp_path):
  xs, ys = _data(STEPS)
  model, opt, keeper = _setup(str(tmp_path))
  result, _ = _run(model, opt, keeper, _dataset(xs, ys), STEPS, stop_after_steps=3,
                   checkpoint_every=0)
  assert result.status == loop.STOPPED and result.step == 3 and result.last_saved is None
  assert tf.train.latest_checkpoint(str(tmp_path)) is None
  want_kernel, _ = _numpy_sgd(xs, ys, *_init(), 3)
  np.testing.assert_allclose(model.dense.kernel.numpy(), want_kernel, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_the_tiny_detector_trains_a_few_steps_in_process(tmp_path):
  from faster_rcnn_tf import config as config_lib
  from faster_rcnn_tf import runs
  from faster_rcnn_tf.data import pipeline
  from faster_rcnn_tf.data import registry
  from faster_rcnn_tf.model import LOSS_NAMES
  from faster_rcnn_tf.training import optimizer as optimizer_lib
  config = config_lib.RunConfig(class_names=('circle', 'square', 'triangle'))
  m = config.model
  m.backbone, m.anchor_scales, m.rpn_channels = 'tiny', (1.0, 2.0, 4.0), 32
  m.train_pre_nms_topk, m.train_post_nms_topk, m.roi_num_samples = 300, 64, 32
  keras.utils.set_random_seed(0)
  model = runs.build_model(config)
  opt = optimizer_lib.build_optimizer(0.005)
  opt.build(model.trainable_variables)
  source = registry.get_source('shapes', 'train', seed=0, shapes_options=dict(
      image_size=64, train_images=8, test_images=2))
  dataset = pipeline.make_dataset(source, training=True, batch_size=2, shuffle_seed=0,
                                  min_size=64, max_size=64, max_boxes=6)
  before = [v.numpy().copy() for v in model.trainable_variables]
  keeper = checkpoints.CheckpointKeeper(str(tmp_path), tf.train.Checkpoint(model=model,
                                                                           optimizer=opt))
  result = loop.train_loop(model, opt, tf.distribute.get_strategy(), dataset, 3,
                           keeper=keeper, checkpoint_every=0, seed=0, log_every=1,
                           batch_size=2, print_fn=lambda line: None, handle_sigterm=False)
  assert result.status == loop.DONE and [s for s, _ in result.history] == [1, 2, 3]
  for _, losses in result.history:
    assert set(losses) == set(LOSS_NAMES) and all(np.isfinite(list(losses.values())))
    parts = sum(v for k, v in losses.items() if k != 'total_loss')
    assert losses['total_loss'] == pytest.approx(parts, rel=1e-4)
  changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before,
                                                               model.trainable_variables)]
  assert any(changed)
  assert os.path.exists(str(tmp_path / 'ckpt-3.index'))


def test_a_dataset_ending_early_raises_dataset_exhausted_after_its_steps(tmp_path):
  xs, ys = _data(STEPS)
  model, opt, keeper = _setup(str(tmp_path))
  with pytest.raises(loop.NoBatchError, match='ended at step 2'):
    _run(model, opt, keeper, _dataset(xs, ys).take(2), STEPS)
  assert int(opt.iterations.numpy()) == 2   # the two batches it had were trained on
