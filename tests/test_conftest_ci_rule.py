"""tests/conftest.py's rule: under CI=true a skipped test fails the run.

Each case runs pytest in a subprocess on a small test file written to a temporary folder
(no TensorFlow: a second or so each), with the repository's conftest loaded as a plugin
(`-p tests.conftest`), so that the rule checked is the one the suite runs under.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tests import conftest
from tests import run_helpers

PASSING = '''
def test_adds():
  assert 1 + 1 == 2
'''

SKIPPED = PASSING + '''

import pytest

@pytest.mark.skip(reason='the script it needs is missing')
def test_needs_a_script():
  assert False
'''

MODULE_SKIPPED = '''
import pytest
pytest.skip('no data here', allow_module_level=True)

def test_never_collected():
  assert True
'''

XFAIL = PASSING + '''

import pytest

@pytest.mark.xfail(reason='a known fault', strict=True)
def test_known_fault():
  assert False
'''


def _pytest(tmp_path, source, ci):
  """Runs pytest with the repository's conftest on a file holding `source`."""
  test_file = tmp_path / 'test_probe.py'
  test_file.write_text(textwrap.dedent(source))
  env = {k: v for k, v in os.environ.items() if k not in ('CI', 'PYTEST_ADDOPTS')}
  env['PYTHONPATH'] = run_helpers.ROOT
  if ci is not None:
    env['CI'] = ci
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'tests.conftest', '-p', 'no:cacheprovider',
       '--rootdir', str(tmp_path), str(test_file)],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  return result.returncode, result.stdout + result.stderr


def test_a_skip_under_ci_fails_the_run_and_names_the_test(tmp_path):
  code, out = _pytest(tmp_path, SKIPPED, 'true')
  assert code == 1, out
  assert 'test_probe.py::test_needs_a_script: skipped under CI=true' in out
  assert 'the script it needs is missing' in out
  assert '1 passed, 1 error' in out  # a skip mark acts in setup: an error there


def test_without_the_skip_the_ci_run_passes(tmp_path):
  code, out = _pytest(tmp_path, PASSING, 'true')
  assert code == 0, out
  assert '1 passed' in out


def test_outside_ci_a_skip_is_only_a_skip(tmp_path):
  code, out = _pytest(tmp_path, SKIPPED, None)
  assert code == 0, out
  assert '1 passed, 1 skipped' in out


def test_a_module_skipped_at_collection_fails_the_ci_run(tmp_path):
  code, out = _pytest(tmp_path, MODULE_SKIPPED, 'True')
  assert code != 0, out
  assert 'skipped under CI=true' in out and 'no data here' in out


def test_an_expected_failure_is_not_a_skip(tmp_path):
  code, out = _pytest(tmp_path, XFAIL, 'true')
  assert code == 0, out
  assert '1 passed, 1 xfailed' in out


def test_ci_values_and_the_allow_list(monkeypatch):
  assert conftest.CI_SKIP_ALLOWED == {}  # no test may skip in CI today
  assert [conftest.ci_enabled({'CI': v}) for v in ('true', 'TRUE', '1', 'yes', ' true ')] == [
      True] * 5
  assert [conftest.ci_enabled({'CI': v}) for v in ('', 'false', '0', 'no')] == [False] * 4
  assert not conftest.ci_enabled({})
  monkeypatch.setitem(conftest.CI_SKIP_ALLOWED, 'tests/test_x.py::test_y', 'a reason')
  assert conftest._allowed('tests/test_x.py::test_y')  # pylint: disable=protected-access
  assert conftest._allowed('tests/test_x.py::test_y[3-a]')  # pylint: disable=protected-access
  assert not conftest._allowed('tests/test_x.py::test_y2')  # pylint: disable=protected-access


@pytest.mark.parametrize('script', ['train.py', 'evaluate.py', 'export.py', 'predict.py'])
def test_the_scripts_the_tests_run_exist(script):
  # Tests that run a script require it (they fail, never skip, when it is missing).
  assert os.path.isfile(os.path.join(run_helpers.ROOT, script)), script
