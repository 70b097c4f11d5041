"""training.optimizer's learning-rate schedule (step decay with linear warm-up), the
weight-decay and doubled-bias rules on a real model's variables, and
training.checkpoints' best-checkpoint keeping, alone and under train.py --eval_every.

Expected values are computed by hand from the reference recipe (rate = base *
factor ** (boundaries passed) * (warmup_factor + (1 - warmup_factor) * min(step / warmup,
1)); Caffe's bias lr_mult 2 / decay_mult 0; kernels decayed, normalization parameters and
biases not), not with the code under test.
"""

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.model import FasterRCNN
from faster_rcnn_tf.training import checkpoints
from faster_rcnn_tf.training import optimizer as optimizer_lib

# ---------------------------------------------------------------- the schedule

# The VGG16 VOC07 recipe with a 500-step warm-up: base 0.01, decays at 50k and 70k,
# warm-up from 0.1 of the rate (the default warmup_factor). By hand:
#   step s < 500: 0.01 * (0.1 + 0.9 * s / 500)
VOC_RECIPE = [
    (0, 0.001), (1, 0.001018), (250, 0.0055), (499, 0.009982),   # warming up
    (500, 0.01), (501, 0.01), (49999, 0.01),                      # the base rate
    (50000, 0.001), (50001, 0.001), (69999, 0.001),               # first decay
    (70000, 0.0001), (70001, 0.0001), (1000000, 0.0001),          # second decay
]


@pytest.mark.parametrize('step, want', VOC_RECIPE)
def test_step_decay_with_warmup_at_and_around_every_boundary(step, want):
  schedule = optimizer_lib.StepDecayWithWarmup(0.01, (50000, 70000), 0.1, warmup_steps=500)
  assert float(schedule(step)) == pytest.approx(want, rel=1e-6)
  # The same in a graph with an int64 step, as the optimizer calls it.
  graph_value = tf.function(schedule)(tf.constant(step, tf.int64))
  assert float(graph_value) == pytest.approx(want, rel=1e-6)


def test_warmup_overlapping_a_decay_and_no_warmup():
  # A decay at step 3 inside a 5-step warm-up: both factors apply.
  schedule = optimizer_lib.StepDecayWithWarmup(1.0, (3,), 0.5, warmup_steps=5,
                                               warmup_factor=0.2)
  want = [0.2, 0.36, 0.52, 0.5 * 0.68, 0.5 * 0.84, 0.5, 0.5]  # 0.2 + 0.8 * s / 5
  np.testing.assert_allclose([float(schedule(s)) for s in range(7)], want, rtol=1e-6)
  plain = optimizer_lib.StepDecayWithWarmup(0.02, (10,), 0.1)
  np.testing.assert_allclose([float(plain(s)) for s in (0, 9, 10, 11)],
                             [0.02, 0.02, 0.002, 0.002], rtol=1e-6)


def test_the_optimizer_applies_the_scheduled_rate_update_by_update():
  """build_optimizer as train.py calls it: update k (counting from 0) moves a variable
  with gradient 1 by lr(k) (plain SGD: momentum 0)."""
  opt = optimizer_lib.build_optimizer(1.0, momentum=0.0, boundaries=(3, 6), decay_factor=0.1,
                                      warmup_steps=2)
  var = tf.Variable(0.0)
  opt.build([var])
  moves = []
  for _ in range(8):
    before = float(var.numpy())
    opt.apply_gradients([(tf.constant(1.0), var)])
    moves.append(before - float(var.numpy()))
  # warm-up (0.1 + 0.9 * k / 2) for k = 0, 1; then 1, decayed at 3 and at 6.
  np.testing.assert_allclose(moves, [0.1, 0.55, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-5)


def test_schedule_config_round_trip():
  schedule = optimizer_lib.StepDecayWithWarmup(0.01, [50000, 70000], 0.1, 500, 0.25)
  again = optimizer_lib.StepDecayWithWarmup(**schedule.get_config())
  for step in (0, 100, 499, 500, 50000, 70000):
    assert float(again(step)) == float(schedule(step))
  assert again.warmup_factor == 0.25 and again.boundaries == (50000, 70000)


# ---------------------------------------------------------------- decay and bias rules


def _roles(model):
  """{id(variable): role} from the layers that own them: 'kernel' (Conv / Dense kernels
  and depthwise kernels), 'bias', 'norm' (batch-norm gamma / beta)."""
  roles = {}
  for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    for attr, role in (('kernel', 'kernel'), ('depthwise_kernel', 'kernel'),
                       ('bias', 'bias'), ('gamma', 'norm'), ('beta', 'norm')):
      var = getattr(layer, attr, None)
      if isinstance(var, keras.Variable):
        roles[id(var)] = role
  return roles


@pytest.mark.parametrize('backbone, extra', [('tiny', {}),
                                             ('mobilenet_v2', {'train_batch_norm': True})])
def test_decay_on_kernels_only_and_doubled_bias_gradients(backbone, extra):
  """Every trainable variable of a real model: gradient g=1 becomes 1 + wd * w on
  kernels (depthwise too), 2 on biases (the doubled bias rate; no decay), 1 on
  batch-norm gamma / beta (neither)."""
  keras.utils.set_random_seed(0)
  model = FasterRCNN(3, backbone=backbone, anchor_scales=(1, 2, 4), rpn_channels=16,
                     **extra)
  model.detect(tf.zeros([1, 64, 64, 3]), tf.constant([[64, 64]]))
  variables = model.trainable_variables
  roles = _roles(model)
  assert all(id(v) in roles for v in variables), [
      v.path for v in variables if id(v) not in roles]
  counts = {r: sum(roles[id(v)] == r for v in variables) for r in ('kernel', 'bias', 'norm')}
  assert counts['kernel'] > 5 and counts['bias'] > 5
  assert (counts['norm'] > 5) == (backbone == 'mobilenet_v2')
  if backbone == 'mobilenet_v2':
    depthwise = {id(l.kernel) for l in model._flatten_layers()  # pylint: disable=protected-access
                 if isinstance(l, keras.layers.DepthwiseConv2D)}
    assert len(depthwise & {id(v) for v in variables}) > 5  # trainable depthwise kernels
  grads = [tf.ones_like(v) for v in variables]
  out = optimizer_lib.apply_reference_rules(grads, variables, weight_decay=0.5,
                                            bias_lr_multiplier=2.0)
  for v, g in zip(variables, out):
    want = {'kernel': 1.0 + 0.5 * v.numpy(), 'bias': np.full(v.shape, 2.0),
            'norm': np.ones(v.shape)}[roles[id(v)]]
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-6, err_msg=v.path)
  # Without the rules the gradients pass unchanged; None gradients stay None.
  out = optimizer_lib.apply_reference_rules([None] + grads[1:], variables, weight_decay=0.0,
                                            bias_lr_multiplier=1.0)
  assert out[0] is None
  for g in out[1:]:
    np.testing.assert_array_equal(g.numpy(), 1.0)


# ---------------------------------------------------------------- best checkpoint


def _keeper(model_dir):
  ckpt = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64), w=tf.Variable(0.0))
  return ckpt, checkpoints.CheckpointKeeper(str(model_dir), ckpt, max_to_keep=2)


def test_best_checkpoint_keeps_the_first_highest_value(tmp_path):
  ckpt, keeper = _keeper(tmp_path)
  saved = []
  for step, value in ((2, 0.3), (4, 0.2), (6, 0.3), (8, 0.5), (10, 0.45)):
    ckpt.step.assign(step)
    ckpt.w.assign(float(step))
    keeper.save(step)
    saved.append(keeper.maybe_save_best(step, 'voc07_map@0.5', value))
  assert saved == [True, False, False, True, False]  # equal is not better
  with open(tmp_path / 'best' / 'best.json') as f:
    assert json.load(f) == {'metric': 'voc07_map@0.5', 'value': 0.5, 'step': 8}
  assert tf.train.latest_checkpoint(str(tmp_path / 'best')).endswith('ckpt-8')
  assert sorted(n for n in os.listdir(tmp_path / 'best') if n.endswith('.index')) == [
      'ckpt-8.index']  # one best kept
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith('ckpt-10')  # latest k apart
  # A resumed run's keeper reads the stored best and keeps it against a lower value.
  ckpt2, keeper2 = _keeper(tmp_path)
  assert keeper2.best_value() == 0.5
  assert not keeper2.maybe_save_best(12, 'voc07_map@0.5', 0.4)
  ckpt2.restore(tf.train.latest_checkpoint(str(tmp_path / 'best')))
  assert float(ckpt2.w.numpy()) == 8.0 and int(ckpt2.step.numpy()) == 8


def _weights(path):
  reader = tf.train.load_checkpoint(path)
  names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith('model/'))
  return {n: reader.get_tensor(n) for n in names}


def test_train_eval_every_keeps_the_best_evaluated_checkpoint(memorized_model_dir):
  """train.py --eval_every=50 on a run whose mAP rises: best/ holds the model of the
  step that printed the highest mAP (the first of equal ones)."""
  model_dir, stdout = memorized_model_dir
  evals = [(int(s), float(v)) for s, v in re.findall(r'step (\d+): VOC07 mAP@0\.5 ([\d.]+)',
                                                     stdout)]
  assert [s for s, _ in evals] == [50, 100, 150], stdout
  best_value = max(v for _, v in evals)
  best_step = next(s for s, v in evals if v == best_value)
  with open(os.path.join(model_dir, 'best', 'best.json')) as f:
    best = json.load(f)
  assert best['metric'] == 'voc07_map@0.5' and best['step'] == best_step
  assert abs(best['value'] - best_value) <= 5e-5  # printed with 4 decimals
  assert best['value'] > evals[0][1]  # the run improved, so the choice was not trivial
  best_path = tf.train.latest_checkpoint(os.path.join(model_dir, 'best'))
  assert best_path.endswith(f'ckpt-{best_step}')
  same_step = _weights(os.path.join(model_dir, f'ckpt-{best_step}'))
  kept = _weights(best_path)
  assert kept.keys() == same_step.keys() and kept
  for name in kept:
    np.testing.assert_array_equal(kept[name], same_step[name], err_msg=name)
  other = _weights(os.path.join(model_dir, 'ckpt-50' if best_step != 50 else 'ckpt-100'))
  assert any(not np.array_equal(kept[n], other[n]) for n in kept)
