"""Shared fixtures."""

import pytest

from tests import run_helpers

# Beside the tiny run's model_dir: the training run's console output (JSON: stdout, stderr).
CONSOLE_FILE = 'train_console.json'


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory):
  """A model_dir with a tiny model trained for a few steps on 64-pixel shapes
  (checkpoints, run_config.json, flags.cfg, final_eval.json). Read-only for tests."""
  model_dir = tmp_path_factory.mktemp('tiny_run') / 'model'
  run_helpers.train_tiny(str(model_dir), console_file=str(model_dir.parent / CONSOLE_FILE))
  return str(model_dir)
