"""Preemption of one worker of a two-worker run (--strategy=multi_worker on 127.0.0.1).

SIGTERM to the non-chief worker mid-run: both workers stop at the same step, the chief
saves one checkpoint there, both exit with status 130; rerunning both commands resumes
from it and ends with the weights of an uninterrupted two-worker run (deterministic mode).
"""

import re
import signal
import time

import numpy as np

from tests import run_helpers

STEPS = 10
COMMON = [f'--flagfile={run_helpers.TINY_CFG}', f'--num_steps={STEPS}', '--checkpoint_every=4',
          '--deterministic', '--seed=11', '--final_eval=false', '--log_every=1',
          '--strategy=multi_worker']


def _start_workers(model_dir, logs):
  outputs = [open(logs / f'worker{index}.out', 'w') for index in range(2)]
  workers = run_helpers.start_train_workers([*COMMON, f'--model_dir={model_dir}'],
                                            outputs=outputs)
  return list(zip(workers, outputs))


def _finish(workers, timeout=400):
  codes = []
  for proc, out in workers:
    try:
      codes.append(proc.wait(timeout=timeout))
    finally:
      if proc.poll() is None:
        proc.kill()
      out.close()
  return codes


def _steps_logged(path):
  return [int(s) for s in re.findall(rf'^step (\d+)/{STEPS} ', path.read_text(), re.M)]


def _model_weights(model_dir):
  import tensorflow as tf
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if n.startswith('model/') or n.startswith('optimizer/')}


def test_sigterm_to_one_worker_stops_both_and_the_rerun_resumes(tmp_path):
  straight_logs = tmp_path / 'straight_logs'
  straight_logs.mkdir()
  straight = tmp_path / 'straight'
  codes = _finish(_start_workers(straight, straight_logs))
  assert codes == [0, 0], (straight_logs / 'worker0.out').read_text()[-3000:]

  run = tmp_path / 'run'
  logs = tmp_path / 'logs'
  logs.mkdir()
  workers = _start_workers(run, logs)
  deadline = time.time() + 300
  while not [s for s in _steps_logged(logs / 'worker1.out') if s >= 2]:
    assert time.time() < deadline and workers[1][0].poll() is None, \
        (logs / 'worker1.out').read_text()[-3000:]
    time.sleep(0.05)
  workers[1][0].send_signal(signal.SIGTERM)
  codes = _finish(workers)
  texts = [(logs / f'worker{i}.out').read_text() for i in range(2)]
  assert codes == [130, 130], texts[0][-2000:] + texts[1][-2000:]
  assert all('Traceback' not in t for t in texts)
  stops = [re.findall(r'Interrupted at step (\d+): saved (\S+)', t) for t in texts]
  assert len(stops[0]) == 1 and len(stops[1]) == 1, texts
  stop_step = int(stops[0][0][0])
  assert int(stops[1][0][0]) == stop_step and 2 <= stop_step < STEPS
  assert stops[0][0][1] == str(run / f'ckpt-{stop_step}')  # the chief's, in --model_dir
  assert max(_steps_logged(logs / 'worker0.out')) == stop_step

  rerun_logs = tmp_path / 'rerun_logs'
  rerun_logs.mkdir()
  codes = _finish(_start_workers(run, rerun_logs))
  texts = [(rerun_logs / f'worker{i}.out').read_text() for i in range(2)]
  assert codes == [0, 0], texts[0][-2000:] + texts[1][-2000:]
  for text in texts:
    assert f'(step {stop_step})' in re.search(r'Resuming from .*', text).group(0)
  assert _steps_logged(rerun_logs / 'worker0.out') == list(range(stop_step + 1, STEPS + 1))
  a, b = _model_weights(straight), _model_weights(run)
  assert sorted(a) == sorted(b) and a
  for name in a:
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
