"""SIGKILL at random moments over a run's checkpoint writes loses nothing.

A tiny deterministic run (--deterministic: op determinism, a data order that a resumed run
skips to the resume step, sampling seeded by the step) checkpoints every step. It is
killed ten times, and restarted with the same command each time: every other kill at a
random moment within a checkpoint write (once files of a checkpoint newer than the listed
one appear, TensorFlow's ckpt-N_temp/ or ckpt-N.*), the others at a random moment within
one step-and-save interval after the life's second new checkpoint. The final checkpoint must equal, tensor for tensor and bit for bit, that of an
uninterrupted run of the same command.
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from tests import run_helpers

STATE = re.compile(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', re.M)


def _latest_step(model_dir):
  try:
    with open(os.path.join(model_dir, 'checkpoint')) as f:
      match = STATE.search(f.read())
  except OSError:
    return -1
  return int(match.group(1)) if match else -1


def _writing(model_dir, listed):
  """True while a checkpoint newer than `listed` has files but is not listed yet."""
  try:
    names = os.listdir(model_dir)
  except OSError:
    return False
  steps = [int(m.group(1)) for m in map(re.compile(r'ckpt-(\d+)').match, names) if m]
  return any(step > listed for step in steps)


def _all_tensors(model_dir):
  import tensorflow as tf
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if n != '_CHECKPOINTABLE_OBJECT_GRAPH'}


def test_ten_sigkills_over_checkpoint_writes_then_equal_weights(tmp_path):
  steps = 30  # a life advances at most 3 steps (2 when killed inside a write): 25 at most
  common = [f'--flagfile={run_helpers.TINY_CFG}', f'--num_steps={steps}',
            '--checkpoint_every=1', '--deterministic', '--seed=7', '--final_eval=false',
            '--log_every=1', '--summary_every=1000']
  straight = tmp_path / 'straight'
  result = run_helpers.run_script('train.py', *common, f'--model_dir={straight}')
  assert result.returncode == 0, result.stderr[-3000:]

  killed = tmp_path / 'killed'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  command = [sys.executable, os.path.join(run_helpers.ROOT, 'train.py'), *common,
             f'--model_dir={killed}']
  rng = np.random.default_rng(16)
  kills = []
  while len(kills) < 10:
    at_start = _latest_step(killed)
    assert at_start < steps, f'the run finished after only {len(kills)} kills'
    log = open(tmp_path / f'life{len(kills)}.log', 'w+')
    proc = subprocess.Popen(command, cwd=run_helpers.ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 300
    while _latest_step(killed) <= at_start and proc.poll() is None:
      assert time.time() < deadline, 'no checkpoint within 300 s'
      time.sleep(0.005)
    assert proc.poll() is None, (tmp_path / f'life{len(kills)}.log').read_text()[-3000:]
    listed = _latest_step(killed)
    if len(kills) % 2 == 0:  # inside the next checkpoint write, at a random moment
      while not _writing(killed, listed) and proc.poll() is None:
        assert time.time() < deadline, 'no checkpoint write within 300 s'
        time.sleep(0.001)
      time.sleep(rng.uniform(0.0, 0.02))
    else:  # anywhere within one step and its checkpoint write, as long as the last one
      first_seen = time.time()
      while _latest_step(killed) <= listed and proc.poll() is None:
        assert time.time() < deadline, 'no second checkpoint within 300 s'
        time.sleep(0.002)
      time.sleep(rng.uniform(0.0, time.time() - first_seen))
    listed = _latest_step(killed)
    writing = _writing(killed, listed)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    kills.append((listed, writing))
  print('kills (latest listed checkpoint, a newer one being written):', kills)
  assert len({step for step, _ in kills}) >= 5, kills  # spread over the run
  assert any(writing for _, writing in kills), kills  # some landed inside a write

  result = run_helpers.run_script('train.py', *command[2:])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Training done: step {steps}' in result.stdout
  # A kill at any moment of a save (even while the manager deletes its oldest checkpoint)
  # leaves nothing that looks damaged; each restart takes over the dead process's lock.
  logs = [p.read_text() for p in sorted(tmp_path.glob('life*.log'))] + [result.stderr]
  assert not any('damaged' in text for text in logs), [l for l in logs if 'damaged' in l]
  assert not (killed / 'damaged').exists()
  assert sum('took over the lock' in text for text in logs) == 10
  a, b = _all_tensors(straight), _all_tensors(killed)
  assert sorted(a) == sorted(b) and any(n.startswith('model/') for n in a)
  for name in a:
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
