"""train.py as a user runs it: bad configs, kill-and-resume, distributed agreement."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import run_helpers

LOSS_LINE = re.compile(r'^step (\d+)/\d+ \| rpn_cls ([\d.]+) rpn_box ([\d.]+) cls ([\d.]+) '
                       r'box ([\d.]+) total ([\d.]+)', re.M)


def _losses_by_step(stdout):
  return {int(m.group(1)): np.array([float(v) for v in m.groups()[1:]])
          for m in LOSS_LINE.finditer(stdout)}


@pytest.mark.parametrize('args,expected', [
    (['--no_such_flag=1'], 'no_such_flag'),
    (['--batch_size=abc'], 'batch_size'),
    (['--dataset=voc:/nonexistent/voc_folder'], '/nonexistent/voc_folder'),
    (['--backbone=resnet9000'], 'resnet9000'),
    (['--num_steps=-3'], 'num_steps'),
    (['--mixed_precision', '--precision=mixed_bfloat16'], 'mixed_bfloat16'),
    (['--inference_splits=0'], "--inference_splits=0: expected 'auto' or a positive"),
    (['--min_size=0'], '--min_size=0'),
    (['--min_size=64,abc'], '--min_size=64,abc'),
    (['--anchor_scales=auto:x'], '--anchor_scales'),
    (['--scale_jitter=2,1'], '--scale_jitter'),
    (['--hue=0.9'], '--hue'),
])
def test_bad_config_names_the_problem_and_writes_nothing(tmp_path, args, expected):
  model_dir = tmp_path / 'run'
  result = run_helpers.run_script('train.py', f'--flagfile={run_helpers.TINY_CFG}',
                                  f'--model_dir={model_dir}', *args, timeout=120)
  assert result.returncode != 0
  assert expected in result.stderr + result.stdout
  assert not model_dir.exists()


def _checkpoint_weights(model_dir):
  import tensorflow as tf
  path = tf.train.latest_checkpoint(str(model_dir))
  reader = tf.train.load_checkpoint(path)
  names = sorted(n for n in reader.get_variable_to_shape_map()
                 if n.startswith('model/') and 'OPTIMIZER_SLOT' not in n)
  return {n: reader.get_tensor(n) for n in names}


def test_sigkill_then_resume_reproduces_an_uninterrupted_run(tmp_path):
  common = [f'--flagfile={run_helpers.TINY_CFG}', '--num_steps=24', '--checkpoint_every=8',
            '--deterministic', '--final_eval=false', '--seed=3']
  straight = tmp_path / 'straight'
  result = run_helpers.run_script('train.py', *common, f'--model_dir={straight}')
  assert result.returncode == 0, result.stderr

  killed = tmp_path / 'killed'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  proc = subprocess.Popen([sys.executable, os.path.join(run_helpers.ROOT, 'train.py'), *common,
                           f'--model_dir={killed}', '--log_every=1'],
                          cwd=run_helpers.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  # Kill it right after the first checkpoint (step 8) is complete: its files are written
  # and the `checkpoint` state file (replaced atomically, last) names it.
  state = killed / 'checkpoint'

  def first_checkpoint_done():
    return state.exists() and 'ckpt-8' in state.read_text()

  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and not first_checkpoint_done():
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert (killed / 'ckpt-8.index').exists()
  assert not (killed / 'ckpt-24.index').exists(), 'the run ended before it could be killed'

  resumed = run_helpers.run_script('train.py', *common, f'--model_dir={killed}',
                                   '--log_every=1')
  assert resumed.returncode == 0, resumed.stderr
  first = re.search(r'Resuming from \S+ckpt-(\d+) \(step (\d+)\)', resumed.stdout)
  assert first, resumed.stdout
  start = int(first.group(2))
  assert start >= 8
  steps = sorted(_losses_by_step(resumed.stdout))
  assert steps == list(range(start + 1, 25))
  a, b = _checkpoint_weights(straight), _checkpoint_weights(killed)
  assert a.keys() == b.keys() and a
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_mirrored_and_multi_worker_losses_match_one_device(tmp_path):
  # A large weight decay: it is added per replica, and must not count twice on two.
  common = [f'--flagfile={run_helpers.TINY_CFG}', '--num_steps=2', '--final_eval=false',
            '--deterministic', '--seed=5', '--batch_size=2', '--log_every=1',
            '--weight_decay=2', '--checkpoint_every=2']
  single = run_helpers.run_script('train.py', *common, f'--model_dir={tmp_path / "one"}')
  assert single.returncode == 0, single.stderr
  mirrored = run_helpers.run_script('train.py', *common, f'--model_dir={tmp_path / "mir"}',
                                    '--strategy=mirrored', '--cpu_devices=2')
  assert mirrored.returncode == 0, mirrored.stderr
  assert '2 replicas' in mirrored.stdout

  ports = [_free_port(), _free_port()]
  workers = []
  for index in range(2):
    tf_config = {'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
                 'task': {'type': 'worker', 'index': index}}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT,
               TF_CONFIG=json.dumps(tf_config))
    workers.append(subprocess.Popen(
        [sys.executable, os.path.join(run_helpers.ROOT, 'train.py'), *common,
         f'--model_dir={tmp_path / "mw"}', '--strategy=multi_worker'],
        cwd=run_helpers.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  outputs = [w.communicate(timeout=400) for w in workers]
  for w, (out, err) in zip(workers, outputs):
    assert w.returncode == 0, err[-3000:]
  reference = _losses_by_step(single.stdout)
  assert sorted(reference) == [1, 2]
  for name, stdout in (('mirrored', mirrored.stdout), ('multi_worker', outputs[0][0])):
    got = _losses_by_step(stdout)
    assert sorted(got) == [1, 2], (name, stdout)
    for step in (1, 2):
      np.testing.assert_allclose(got[step], reference[step], atol=2e-3,
                                 err_msg=f'{name} step {step}')
  # The weights after the two updates: weight decay moves them by about 1e-2 of their size here.
  one = _checkpoint_weights(tmp_path / 'one')
  for name, model_dir in (('mirrored', tmp_path / 'mir'), ('multi_worker', tmp_path / 'mw')):
    got = _checkpoint_weights(model_dir)
    assert sorted(got) == sorted(one)
    for key, value in one.items():
      np.testing.assert_allclose(got[key], value, atol=2e-5, err_msg=f'{name} {key}')
