"""Shared fixtures, and the rule that under CI a skipped test fails the run.

A test that skips where it should run (a script renamed, data missing, an optional import
gone) drops its check without a sound: on a developer's machine that is a visible 's' in
the summary, in CI nobody looks. So when the environment variable CI says true (GitHub
Actions and most CI services set CI=true; `.ci/run` sets it too), every skip, at
collection or in a test's setup, call or teardown, is reported as a failure naming the
skip's reason, unless the test is on `CI_SKIP_ALLOWED`. Expected failures (xfail) are not
skips and are left alone.
"""

import os

import pytest

from tests import run_helpers

# Beside the tiny run's model_dir: the training run's console output (JSON: stdout, stderr).
CONSOLE_FILE = 'train_console.json'

# Tests allowed to skip under CI, by node id ('tests/test_x.py::test_name', without any
# '[param]' suffix, which covers all its parameters), each with the reason why its skip
# cannot hide a lost check. Keep it short; empty today: no test may skip in CI.
CI_SKIP_ALLOWED = {
}

_CI_TRUE = ('true', '1', 'yes')


def ci_enabled(environ=None):
  """Whether the environment says this is a CI run (CI=true, 1 or yes, any case)."""
  return (environ if environ is not None else os.environ).get('CI', '').strip().lower() in (
      _CI_TRUE)


def _allowed(nodeid):
  return nodeid in CI_SKIP_ALLOWED or nodeid.split('[', 1)[0] in CI_SKIP_ALLOWED


def _skip_reason(report):
  longrepr = report.longrepr
  if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, 'Skipped: why')
    return f'{longrepr[2]} ({longrepr[0]}:{longrepr[1]})'
  return str(longrepr)


def _fail_if_skipped(report):
  if (report.skipped and not hasattr(report, 'wasxfail') and ci_enabled()
      and not _allowed(report.nodeid)):
    report.outcome = 'failed'
    report.longrepr = (f'{report.nodeid}: skipped under CI=true, which fails the run (add it '
                       f'to CI_SKIP_ALLOWED in tests/conftest.py only with a reason): '
                       f'{_skip_reason(report)}')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  del item, call
  outcome = yield
  _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
  del collector
  outcome = yield
  _fail_if_skipped(outcome.get_result())


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory):
  """A model_dir with a tiny model trained for a few steps on 64-pixel shapes
  (checkpoints, run_config.json, flags.cfg, final_eval.json). Read-only for tests."""
  model_dir = tmp_path_factory.mktemp('tiny_run') / 'model'
  run_helpers.train_tiny(str(model_dir), console_file=str(model_dir.parent / CONSOLE_FILE))
  return str(model_dir)


@pytest.fixture(scope='session')
def memorized_model_dir(tmp_path_factory):
  """(model_dir, train.py's stdout) of the tiny model trained on 4 shapes images until it
  knows them, evaluated on them every 50 steps (run_helpers.MEMORIZE_ARGS): checkpoints
  ckpt-50/100/150, best/, final_eval.json. Read-only for tests."""
  model_dir = tmp_path_factory.mktemp('memorized_run') / 'model'
  result = run_helpers.train_tiny(str(model_dir), *run_helpers.MEMORIZE_ARGS)
  return str(model_dir), result.stdout


@pytest.fixture
def op_determinism():
  """TF op determinism on for one test, off again after it.

  Without it some of TF's multi-threaded CPU gradient kernels (scatter-adds, bias
  reductions) sum in an order that varies from run to run: two computations of one
  training step then differ by up to 1e-6 on small models and 1e-3 on larger ones, which
  no tolerance that still catches a wrong step can absorb. Kernels are chosen when a
  function is traced, so the test must build its models and functions inside."""
  # pylint: disable=import-outside-toplevel
  # TF exports only the call that turns it on; this module also has the one that turns it
  # off. Imported here: test_conftest_ci_rule.py loads this file into bare pytest
  # subprocesses, which need not pay for importing TensorFlow.
  from tensorflow.python.framework import config as tf_config
  tf_config.enable_op_determinism()
  try:
    yield
  finally:
    tf_config.disable_op_determinism()
