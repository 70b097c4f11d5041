"""FasterRCNN in Keras' own loop: compile / fit (with validation) / predict, the same
training step as train.py's Trainer, .keras save and load in a fresh process, and
BackupAndRestore resuming a fit killed with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf import model as model_lib
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data.shapes import ShapesSource
from faster_rcnn_tf.model import FasterRCNN
from faster_rcnn_tf.training import optimizer as optimizer_lib
from faster_rcnn_tf.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A stride-8 tiny model for 64-pixel shapes (a fraction of a second a step on 2 cores).
TINY = dict(backbone='tiny_s8', anchor_base_size=8, anchor_scales=(2, 4, 8), rpn_channels=32,
            train_pre_nms_topk=300, train_post_nms_topk=64, test_pre_nms_topk=300,
            test_post_nms_topk=32, roi_num_samples=32, max_detections=20)
IMAGE = 64


def _datasets(train_images=64, val_images=8, batch_size=4):
  train = ShapesSource('train', image_size=IMAGE, num_images=train_images)
  val = ShapesSource('test', image_size=IMAGE, num_images=val_images)
  common = dict(batch_size=batch_size, min_size=IMAGE, max_size=IMAGE, max_boxes=8)
  return (pipeline.make_dataset(train, training=True, **common),
          pipeline.make_dataset(val, training=False, **common))


def _tiny(seed=0):
  keras.utils.set_random_seed(seed)
  return FasterRCNN(4, **TINY)


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
  """(model, history, validation dataset, callbacks folder): the tiny model fitted for 8
  epochs of 6 steps with validation after each, under ModelCheckpoint (best val_loss),
  TensorBoard and EarlyStopping."""
  train, val = _datasets()
  model = _tiny()
  model.compile(optimizer_lib.build_optimizer(2e-3, name='adam'), weight_decay=1e-4)
  folder = tmp_path_factory.mktemp('callbacks')
  callbacks = [
      keras.callbacks.ModelCheckpoint(str(folder / 'best.keras'), save_best_only=True),
      keras.callbacks.TensorBoard(str(folder / 'logs')),
      keras.callbacks.EarlyStopping(monitor='val_total_loss', mode='min', patience=8)]
  history = model.fit(train, validation_data=val, epochs=8, steps_per_epoch=6, verbose=0,
                      callbacks=callbacks)
  return model, history.history, val, folder


def test_fit_halves_the_loss_and_records_every_named_loss_with_validation(fitted):
  model, history, _, _ = fitted
  for name in model_lib.LOSS_NAMES:
    for key in (name, f'val_{name}'):
      assert len(history[key]) == 8, key
      assert np.all(np.isfinite(history[key])), (key, history[key])
  assert history['loss'] == history['total_loss']  # the Keras callbacks' default monitor
  assert history['total_loss'][-1] < 0.5 * history['total_loss'][0], history['total_loss']
  assert history['val_total_loss'][-1] < history['val_total_loss'][0]
  # total = the sum of the four, in each epoch's mean
  parts = sum(np.array(history[n]) for n in model_lib.LOSS_NAMES[:4])
  np.testing.assert_allclose(parts, history['total_loss'], rtol=1e-5)
  assert int(model.optimizer.iterations.numpy()) == 48


def test_evaluate_leaves_weights_and_gives_the_same_losses_twice(fitted):
  model, _, val, _ = fitted
  before = [w.numpy() for w in model.weights]
  first = model.evaluate(val, return_dict=True, verbose=0)
  second = model.evaluate(val, return_dict=True, verbose=0)
  assert set(first) == {'loss', *model_lib.LOSS_NAMES}
  for name, value in first.items():
    assert value == pytest.approx(second[name], rel=1e-6), name
  for w, b in zip(model.weights, before):
    np.testing.assert_array_equal(w.numpy(), b)


def test_predict_gives_the_detections_of_detect(fitted):
  model, _, val, _ = fitted
  predicted = model.predict(val, verbose=0)
  batches = list(val)
  assert predicted[inputs.DETECTION_BOXES].shape == (8, 20, 4)
  want = [model.detect(b[inputs.IMAGES], b[inputs.IMAGE_SIZES]) for b in batches]
  for key in (inputs.DETECTION_BOXES, inputs.DETECTION_SCORES, inputs.DETECTION_CLASSES,
              inputs.NUM_DETECTIONS):
    np.testing.assert_allclose(predicted[key],
                               np.concatenate([w[key].numpy() for w in want]), atol=1e-5)
  assert predicted[inputs.NUM_DETECTIONS].sum() > 0


def test_callbacks_checkpoint_the_best_epoch_and_write_summaries(fitted):
  model, history, val, folder = fitted
  best = keras.saving.load_model(str(folder / 'best.keras'))
  batch = next(iter(val))
  losses = best.evaluate(tf.data.Dataset.from_tensors(batch), return_dict=True, verbose=0)
  assert np.isfinite(losses['total_loss'])
  assert int(best.optimizer.iterations.numpy()) == 6 * (1 + int(np.argmin(history['val_loss'])))
  events = [name for _, _, names in os.walk(folder / 'logs') for name in names
            if name.startswith('events.out.tfevents')]
  assert len(events) >= 2  # train and validation


@pytest.mark.usefixtures('op_determinism')
def test_keras_train_step_is_the_trainer_step():
  """From the same weights, one fit step and one Trainer.step (train.py's) give the same
  weights: SGD with momentum, weight decay, doubled bias rate, gradient clipping."""
  train, _ = _datasets(train_images=4)
  batch = next(iter(train))
  settings = dict(weight_decay=1e-3, bias_lr_multiplier=2.0)
  stepped = []
  for use_fit in (True, False):
    model = _tiny(seed=1)
    opt = optimizer_lib.build_optimizer(0.01, momentum=0.9, clip_norm=5.0)
    if use_fit:
      model.compile(opt, seed=7, **settings)
      model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    else:
      opt.build(model.trainable_variables)
      Trainer(model, opt, tf.distribute.get_strategy(), seed=7, **settings).step(batch)
    stepped.append([v.numpy() for v in model.trainable_variables])
  initial = [v.numpy() for v in _tiny(seed=1).trainable_variables]
  assert any(not np.array_equal(a, b) for a, b in zip(stepped[0], initial))
  for a, b in zip(*stepped):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_compile_refuses_a_loss():
  with pytest.raises(ValueError, match='loss is not used'):
    _tiny().compile('sgd', loss='mse')


def test_config_round_trip_and_execution_options():
  model = FasterRCNN(4, execution={'inference_splits': 1, 'fold_batch_norm': False},
                     detection_nms_method='kernel', proposal_nms_method='tiled', **TINY)
  config = model.get_config()
  assert config['execution'] == {'fold_batch_norm': False, 'compile_backbone': False,
                                 'inference_splits': 1, 'detection_nms_method': 'kernel',
                                 'proposal_nms_method': 'tiled'}
  json.dumps(config)  # plain values
  again = FasterRCNN.from_config(config)
  assert again.get_config() == config
  assert again.detection_generator.nms_method == 'kernel'
  assert again.proposal_layer.nms_method == 'tiled'
  # A configuration written before proposal_nms_method existed takes its default.
  del config['execution']['proposal_nms_method']
  assert FasterRCNN.from_config(config).proposal_layer.nms_method == 'auto'
  with pytest.raises(ValueError, match='unknown option'):
    FasterRCNN(4, execution={'fold_batchnorm': True}, **TINY)


_LOAD_AND_DETECT = '''
import sys
import numpy as np
import keras
from faster_rcnn_tf import FasterRCNN  # registers the classes with Keras
path, batch_path, out_path = sys.argv[1:]
model = keras.saving.load_model(path)
assert isinstance(model, FasterRCNN), type(model)
batch = np.load(batch_path)
out = model.detect(batch['images'], batch['image_sizes'])
np.savez(out_path, iterations=int(model.optimizer.iterations.numpy()),
         **{k: v.numpy() for k, v in out.items()})
'''


def _detect_in_fresh_process(tmp_path, model_path, batch):
  batch_path, out_path = str(tmp_path / 'batch.npz'), str(tmp_path / 'out.npz')
  np.savez(batch_path, images=batch[inputs.IMAGES].numpy(),
           image_sizes=batch[inputs.IMAGE_SIZES].numpy())
  result = subprocess.run(
      [sys.executable, '-c', _LOAD_AND_DETECT, model_path, batch_path, out_path], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return dict(np.load(out_path))


def _assert_same_detections(got, want):
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)


def test_saved_model_file_loads_in_a_fresh_process_with_the_same_detections(fitted,
                                                                            tmp_path):
  model, _, val, _ = fitted
  path = str(tmp_path / 'm.keras')
  model.save(path)
  batch = next(iter(val))
  want = model.detect(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
  assert int(want[inputs.NUM_DETECTIONS].numpy().sum()) > 0
  got = _detect_in_fresh_process(tmp_path, path, batch)
  _assert_same_detections(got, want)
  assert int(got['iterations']) == 48  # the optimizer state came back too


def test_folded_batch_norm_model_round_trips(tmp_path):
  """MobileNetV2 (FrozenBatchNormalization and folded conv layers, random batch norm
  statistics): the loaded model detects alike."""
  keras.utils.set_random_seed(3)
  model = FasterRCNN(4, backbone='mobilenet_v2', rpn_channels=32, test_post_nms_topk=32,
                     max_detections=20, score_threshold=0.0, inference_splits=1)
  rng = np.random.default_rng(0)
  for layer in model.backbone.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.moving_mean.assign(rng.normal(size=n).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
  model.compile(optimizer_lib.build_optimizer(1e-3))
  path = str(tmp_path / 'mobilenet.keras')
  model.save(path)
  batch = {inputs.IMAGES: tf.constant(rng.uniform(0, 255, (2, 64, 96, 3)), tf.float32),
           inputs.IMAGE_SIZES: tf.constant([[64, 96], [60, 80]], tf.int32)}
  want = model.detect(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
  _assert_same_detections(_detect_in_fresh_process(tmp_path, path, batch), want)


_FIT_WITH_BACKUP = '''
import json, os, sys, time
import keras
sys.path.insert(0, {root!r})
from tests import test_keras_api as t
from faster_rcnn_tf.training import optimizer as optimizer_lib
backup_dir, log_path, epochs, steps, pause_after = sys.argv[1:]
epochs, steps, pause_after = int(epochs), int(steps), int(pause_after)


class Log(keras.callbacks.Callback):
  def _write(self, record):
    with open(log_path, 'a') as f:
      f.write(json.dumps(record) + '\\n')
      f.flush()
      os.fsync(f.fileno())

  def on_epoch_begin(self, epoch, logs=None):
    self._write({{'pid': os.getpid(), 'epoch_begin': epoch,
                 'iterations': int(self.model.optimizer.iterations.numpy())}})

  def on_epoch_end(self, epoch, logs=None):
    self._write({{'pid': os.getpid(), 'epoch_end': epoch}})
    if epoch == pause_after:  # after BackupAndRestore saved this epoch: wait to be killed
      self._write({{'pid': os.getpid(), 'waiting': epoch}})
      time.sleep(600)


train, _ = t._datasets()
model = t._tiny()
model.compile(optimizer_lib.build_optimizer(2e-3, name='adam'))
history = model.fit(train, epochs=epochs, steps_per_epoch=steps, verbose=0,
                    callbacks=[keras.callbacks.BackupAndRestore(backup_dir), Log()])
with open(log_path, 'a') as f:
  f.write(json.dumps({{'pid': os.getpid(), 'done': len(history.history['total_loss']),
                      'iterations': int(model.optimizer.iterations.numpy())}}) + '\\n')
'''


def _records(log_path):
  if not os.path.exists(log_path):
    return []
  with open(log_path) as f:
    return [json.loads(line) for line in f if line.endswith('\n')]


def test_backup_and_restore_resumes_a_fit_killed_with_sigkill(tmp_path):
  backup_dir, log_path = str(tmp_path / 'backup'), str(tmp_path / 'log.jsonl')
  script = str(tmp_path / 'fit.py')
  with open(script, 'w') as f:
    f.write(_FIT_WITH_BACKUP.format(root=ROOT))
  epochs, steps, killed_after = 5, 3, 2
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')

  def start(pause_after):
    return subprocess.Popen([sys.executable, script, backup_dir, log_path, str(epochs),
                             str(steps), str(pause_after)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  first = start(killed_after)
  deadline = time.time() + 600
  while not any(r.get('waiting') == killed_after for r in _records(log_path)):
    assert first.poll() is None, first.stdout.read()
    assert time.time() < deadline, 'the first fit did not reach its pause'
    time.sleep(0.5)
  # The backup of epoch `killed_after` is on disk (BackupAndRestore runs before Log).
  with open(os.path.join(backup_dir, 'training_metadata.json')) as f:
    assert json.load(f)['epoch'] == killed_after + 1
  first.send_signal(signal.SIGKILL)
  first.wait(timeout=60)
  assert first.returncode == -signal.SIGKILL

  second = start(-1)
  output, _ = second.communicate(timeout=600)
  assert second.returncode == 0, output
  records = _records(log_path)
  first_epochs = [r['epoch_begin'] for r in records
                  if r['pid'] == first.pid and 'epoch_begin' in r]
  second_begins = [r for r in records if r['pid'] == second.pid and 'epoch_begin' in r]
  assert first_epochs == list(range(killed_after + 1))
  # The rerun starts after the backed-up epoch, with the optimizer state of that point.
  assert [r['epoch_begin'] for r in second_begins] == list(range(killed_after + 1, epochs))
  assert second_begins[0]['iterations'] == (killed_after + 1) * steps
  (done,) = [r for r in records if 'done' in r]
  assert done['pid'] == second.pid and done['iterations'] == epochs * steps
  assert not os.path.exists(backup_dir)  # removed when the fit completed


_FIT_MIRRORED = '''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests import test_keras_api as t
from faster_rcnn_tf.training import optimizer as optimizer_lib
train, val = t._datasets(train_images=16, val_images=4)
drop = lambda b: {k: v for k, v in b.items() if k != 'gt_difficult'}
strategy = tf.distribute.MirroredStrategy(
    [d.name for d in tf.config.list_logical_devices('CPU')])
with strategy.scope():
  model = t._tiny()
  model.compile(optimizer_lib.build_optimizer(1e-3, name='adam'))
history = model.fit(train.map(drop), validation_data=val.map(drop), epochs=2,
                    steps_per_epoch=2, verbose=0)
print(json.dumps({'replicas': strategy.num_replicas_in_sync, 'history': history.history,
                  'iterations': int(model.optimizer.iterations.numpy())}))
'''


def test_fit_under_a_mirrored_strategy_of_two_replicas():
  result = subprocess.run([sys.executable, '-c', _FIT_MIRRORED], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2'),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['replicas'] == 2 and out['iterations'] == 4
  for name in model_lib.LOSS_NAMES:
    for key in (name, f'val_{name}'):
      assert len(out['history'][key]) == 2 and np.all(np.isfinite(out['history'][key])), key
