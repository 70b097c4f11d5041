"""train.py --data_service: a tf.data service (dispatcher and worker in this test process)
runs the TFRecord pipeline; the losses equal a local run's."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.data import convert
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data import registry
from faster_rcnn_tf.data import service
from faster_rcnn_tf.data import voc
from tests import run_helpers
from tests.test_data_voc import _shared

LOSS_LINE = re.compile(r'^step (\d+)/\d+ \| rpn_cls ([\d.]+) rpn_box ([\d.]+) cls ([\d.]+) '
                       r'box ([\d.]+) total ([\d.]+)', re.M)

_DRIVER = '''
import sys
from absl import flags
import train
for args in sys.argv[1:]:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['train.py'] + args.split(' '))
  print('RUN', args.split(' ')[-1], flush=True)
  print('RETURN CODE', train.main(['train.py']), flush=True)
'''


def _records(tmp_path):
  bccd = _shared('bccd')
  stems = ['BloodImage_00001', 'BloodImage_00010', 'BloodImage_00100', 'BloodImage_00200']
  for sub in ('Annotations', 'JPEGImages'):
    (tmp_path / 'voc' / sub).mkdir(parents=True)
  for stem in stems:
    shutil.copy(os.path.join(bccd, 'Annotations', stem + '.xml'), tmp_path / 'voc' / 'Annotations')
    shutil.copy(os.path.join(bccd, 'JPEGImages', stem + '.jpg'), tmp_path / 'voc' / 'JPEGImages')
  convert.convert(registry.get_source(f'voc:{tmp_path / "voc"}', 'all'),
                  str(tmp_path / 'tf' / 'all'), num_shards=2)
  return f'tfrecord:{tmp_path}/tf/all-*.tfrecord'


def test_training_through_a_local_data_service_gives_the_same_losses(tmp_path):
  spec = _records(tmp_path)
  dispatcher = tf.data.experimental.service.DispatchServer()
  worker = tf.data.experimental.service.WorkerServer(
      tf.data.experimental.service.WorkerConfig(
          dispatcher_address=dispatcher.target.split('://')[1]))
  common = (f'--flagfile={run_helpers.TINY_CFG} --dataset={spec} --train_split=all '
            '--num_steps=3 --checkpoint_every=3 --deterministic --seed=4 --final_eval=false '
            '--log_every=1')
  runs = [f'{common} --model_dir={tmp_path / "local"}',
          f'{common} --data_service={dispatcher.target} --model_dir={tmp_path / "service"}']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  result = subprocess.run([sys.executable, '-c', _DRIVER, *runs], cwd=run_helpers.ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count('RETURN CODE 0') == 2, result.stdout + result.stderr[-3000:]
  marker = f'RUN --model_dir={tmp_path / "service"}'
  assert result.stdout.count(marker) == 1
  local_out, service_out = result.stdout.split(marker)
  local = {int(m.group(1)): [float(v) for v in m.groups()[1:]]
           for m in LOSS_LINE.finditer(local_out)}
  served = {int(m.group(1)): [float(v) for v in m.groups()[1:]]
            for m in LOSS_LINE.finditer(service_out)}
  assert sorted(local) == sorted(served) == [1, 2, 3]
  for step in local:
    np.testing.assert_allclose(served[step], local[step], atol=1e-4, err_msg=f'step {step}')
  del worker


def test_python_decoding_pipelines_cannot_go_to_the_service_and_say_why(tmp_path):
  python_source = voc.VocSource(_shared('bccd'), 'train')
  python_source.decode_in_graph = False  # as a folder of CMYK or 16-bit images is
  folder = pipeline.make_dataset(python_source, training=True, batch_size=1)
  with pytest.raises(service.DataServiceError, match='convert it to TFRecords'):
    service.distribute(folder, 'grpc://localhost:5050')
  with pytest.raises(service.DataServiceError, match='grpc://HOST:PORT'):
    service.check_address('localhost:5050')
