"""Running a command-line script: errors a user or the machine causes become one line.

    if __name__ == '__main__':
      cli.run_main(main, 'train.py')

`main(argv)` returns the exit status. Errors that are not bugs in this software are
printed as one line, `PROG: error: MESSAGE`, and exit with status 1:
  * OSError (a full disk, a read-only or missing folder, a permission), naming the file;
  * TensorFlow errors that come from the machine or the files (out of memory or disk,
    permission, missing or corrupt files, a lost worker);
  * MemoryError.
Ctrl-C exits with status 130 and one line. Any other exception is a bug: Python's
traceback is shown as usual. --traceback shows the traceback for every error.
Scripts keep reporting their own bad-input errors (exit status 2) themselves; bad flags
are reported by the flags parser before `main` runs (absl's, or config_flags.parse_argv
for evaluate.py, export.py and predict.py: one line, exit status 2).
"""

import sys

from absl import app
from absl import flags

flags.DEFINE_bool('traceback', False, 'Show the full Python traceback of an error, also '
                  'of the errors normally reported in one line (for bug reports).')

_TF_MACHINE_ERRORS = ('ResourceExhaustedError', 'PermissionDeniedError', 'DataLossError',
                      'NotFoundError', 'UnavailableError', 'DeadlineExceededError',
                      'AbortedError', 'CancelledError')


def _tf_machine_error(error):
  tf_errors = sys.modules.get('tensorflow.python.framework.errors_impl')
  if tf_errors is None:
    return False
  return any(isinstance(error, getattr(tf_errors, name)) for name in _TF_MACHINE_ERRORS)


def is_reported(error):
  """True for the errors reported in one line (see the module docstring)."""
  return isinstance(error, (OSError, MemoryError)) or _tf_machine_error(error)


def one_line(error):
  """The message of a reported error, one line naming the file when known."""
  if isinstance(error, MemoryError):
    return 'out of memory (MemoryError)'
  if isinstance(error, OSError) and type(error).__str__ is OSError.__str__ and \
      error.strerror:
    from faster_rcnn_tf import fileio
    where = ' -> '.join(str(f) for f in (error.filename, error.filename2) if f)
    reason = fileio.os_error_reason(error)
    return f'{where}: {reason}' if where else reason
  text = str(getattr(error, 'message', None) or error).strip()
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  first = lines[0] if lines else ''
  if _tf_machine_error(error):
    name = type(error).__name__
    if 'No space left on device' in text:
      first = f'no space left on the device ({first})'
    elif name == 'ResourceExhaustedError':
      first = f'out of memory ({first}); a smaller batch or image size needs less'
    first = f'{first} [{name}]'
  if len(first) > 400:
    first = first[:400] + '...'
  return first or type(error).__name__


def _wants_traceback():
  try:
    return bool(flags.FLAGS['traceback'].value)
  except (KeyError, AttributeError):
    return False


def call_main(main, prog, argv):
  """Runs main(argv) and returns the exit status, reporting errors as described above."""
  try:
    return main(argv)
  except KeyboardInterrupt:
    if _wants_traceback():
      raise
    print(f'\n{prog}: interrupted', file=sys.stderr, flush=True)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if _wants_traceback() or not is_reported(e):
      raise
    print(f'{prog}: error: {one_line(e)}', file=sys.stderr, flush=True)
    return 1


def run_main(main, prog, flags_parser=None):
  """absl's app.run(main) with the error reporting of `call_main`; exits the process."""
  kwargs = {'flags_parser': flags_parser} if flags_parser else {}
  app.run(lambda argv: sys.exit(call_main(main, prog, argv)), **kwargs)
