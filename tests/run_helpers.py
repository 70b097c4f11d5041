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


# The tiny model made to memorize four shapes images (Adam, no flips, no decay), scored
# on those same images: its mAP rises from near 0 to near 1 in 150 steps, which gives
# the end-to-end evaluation a floor that a broken evaluation cannot reach, and
# --eval_every a best checkpoint worth choosing.
MEMORIZE_ARGS = ('--optimizer=adam', '--learning_rate=0.003', '--num_steps=150',
                 '--checkpoint_every=50', '--eval_every=50', '--log_every=50',
                 '--shapes_train_images=4', '--eval_split=train', '--noflip',
                 '--weight_decay=0', '--nodouble_bias_lr', '--seed=0')
MEMORIZE_IMAGES = 4
MEMORIZE_STEPS = 150
