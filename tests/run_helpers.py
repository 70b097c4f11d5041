"""Helpers for tests that run the project's scripts as a user would (subprocesses)."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = os.path.join(ROOT, 'tests', 'tiny_run.cfg')


def run_script(script, *args, timeout=600, env=None):
  """Runs `python ROOT/script args...` from ROOT; returns the CompletedProcess."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT)
  full_env.update(env or {})
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                        env=full_env, capture_output=True, text=True, timeout=timeout)


def train_tiny(model_dir, *extra):
  """Trains the tiny test model into model_dir (a few seconds); asserts it succeeded."""
  result = run_script('train.py', f'--flagfile={TINY_CFG}', f'--model_dir={model_dir}',
                      *extra)
  assert result.returncode == 0, result.stdout + result.stderr
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
