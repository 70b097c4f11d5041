"""Shared fixtures."""

import pytest

from tests import run_helpers


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory):
  """A model_dir with a tiny model trained for a few steps on 64-pixel shapes
  (checkpoints, run_config.json, flags.cfg, final_eval.json). Read-only for tests."""
  model_dir = tmp_path_factory.mktemp('tiny_run') / 'model'
  run_helpers.train_tiny(str(model_dir))
  return str(model_dir)
