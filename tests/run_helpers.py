"""Helpers for tests that run the project's scripts as a user would (subprocesses)."""

import os
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
