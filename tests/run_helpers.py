"""Helpers for tests that run the project's scripts as a user would (subprocesses)."""

import json
import os
import re
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = os.path.join(ROOT, 'tests', 'tiny_run.cfg')


# A line of TensorFlow's C++ logging (absl C++ 'I0000 00:00:...' or the older
# '2024-01-01 00:00:00.000000: I ...' form), absl's warning about it, or an absl Python
# INFO line ('I1201 06:26:58.427182 ...').
LIBRARY_LOG_LINE = re.compile(
    r'^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] '
    r'|WARNING: All log messages before absl::InitializeLog)', re.M)


def run_script(script, *args, timeout=600, env=None):
  """Runs `python ROOT/script args...` from ROOT; returns the CompletedProcess.

  TF_CPP_MIN_LOG_LEVEL is left unset, as a user has it: the scripts quieten TensorFlow
  themselves (faster_rcnn_tf/console.py).
  """
  full_env = dict(os.environ, PYTHONPATH=ROOT)
  full_env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  full_env.update(env or {})
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                        env=full_env, capture_output=True, text=True, timeout=timeout)


def train_tiny(model_dir, *extra, console_file=None):
  """Trains the tiny test model into model_dir (a few seconds); asserts it succeeded.

  console_file: where to keep the run's stdout and stderr (for tests of the console).
  """
  result = run_script('train.py', f'--flagfile={TINY_CFG}', f'--model_dir={model_dir}',
                      *extra)
  assert result.returncode == 0, result.stdout + result.stderr
  if console_file:
    with open(console_file, 'w') as f:
      json.dump({'stdout': result.stdout, 'stderr': result.stderr}, f)
  return result


def free_ports(n):
  """n distinct free TCP ports on 127.0.0.1."""
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def start_train_workers(args, num_workers=2, outputs=None, **popen_kwargs):
  """Starts `num_workers` train.py processes that form one cluster on 127.0.0.1 (TF_CONFIG,
  task index = position); args should include --strategy=multi_worker. outputs: one file
  per worker for its stdout and stderr, else popen_kwargs (e.g. stdout=PIPE). Returns the
  Popen objects."""
  ports = free_ports(num_workers)
  workers = []
  for index in range(num_workers):
    tf_config = {'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
                 'task': {'type': 'worker', 'index': index}}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT,
               TF_CONFIG=json.dumps(tf_config))
    kwargs = dict(popen_kwargs)
    if outputs is not None:
      kwargs.update(stdout=outputs[index], stderr=subprocess.STDOUT)
    workers.append(subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *args],
                                    cwd=ROOT, env=env, **kwargs))
  return workers


# The tiny model made to memorize four shapes images (Adam, no flips, the rate divided
# by 10 at step 100), scored on those same images: its mAP rises from near 0 to near 1 in
# 150 steps, which gives the end-to-end evaluation a floor that a broken evaluation cannot
# reach, and --eval_every a best checkpoint worth choosing. --deterministic: without it
# the gradient kernels' summation order makes each run take its own path; at a constant
# rate one of three runs ended at 0.58 (the others 0.89 and 1.0), with the decay four
# runs ended at 0.91 to 1.0.
MEMORIZE_IMAGES = 4
MEMORIZE_STEPS = 150
MEMORIZE_ARGS = ('--optimizer=adam', '--learning_rate=0.003', '--lr_decay_steps=100',
                 f'--num_steps={MEMORIZE_STEPS}', '--checkpoint_every=50', '--eval_every=50',
                 '--log_every=50', f'--shapes_train_images={MEMORIZE_IMAGES}',
                 '--eval_split=train', '--noflip', '--weight_decay=0', '--nodouble_bias_lr',
                 '--seed=0', '--deterministic')
