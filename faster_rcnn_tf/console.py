"""A quiet console for the command-line scripts: progress and results, not library logs.

TensorFlow prints start-up lines from C++ (oneDNN, CUDA, XLA, CPU feature banners) and
Python INFO lines from checkpoint saving; they tell a user nothing about their run. The
scripts call `quiet_start()` before anything imports TensorFlow and `quiet_loggers()`
after their flags are parsed. Passing absl's --verbosity (-v) flag on the command line,
e.g. --verbosity=0 for INFO, leaves every log as TensorFlow prints it.

TensorFlow's C++ logging obeys TF_CPP_MIN_LOG_LEVEL only once its logging is set up,
which happens while it loads; the lines written before that go straight to the standard
error stream, so that stream is pointed at the null device while TensorFlow loads and
finds its devices (`silenced_stderr`).
"""

import contextlib
import logging
import os
import sys

# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no INFO or WARNING, 3 only FATAL. Level 3:
# TensorFlow logs notices at ERROR level too (e.g. oneDNN falling back to Eigen for a data
# type); a real failure reaches Python as an exception with its own message.
QUIET_CPP_LEVEL = '3'


def verbosity_requested(argv) -> bool:
  """Whether argv (a script's command line) sets absl's --verbosity / -v flag."""
  for arg in argv[1:]:
    if arg == '--':
      break
    name = arg.lstrip('-').split('=', 1)[0] if arg.startswith('-') else None
    if name in ('verbosity', 'v'):
      return True
  return False


@contextlib.contextmanager
def silenced_stderr():
  """Points file descriptor 2 at the null device inside the block, then restores it
  (Python's own sys.stderr writes to the same descriptor: flush it first)."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(devnull)
    os.close(saved)


def quiet_start(argv=None) -> bool:
  """Loads TensorFlow without its C++ start-up lines, unless argv asks for --verbosity.

  Call it first in a script, before any import that loads TensorFlow. Sets
  TF_CPP_MIN_LOG_LEVEL (unless the environment already sets it) and loads TensorFlow
  and its device list with the standard error stream silenced. A failure to load still
  raises (its traceback is printed after the stream is restored). Returns whether the
  console is quiet.
  """
  argv = sys.argv if argv is None else argv
  if verbosity_requested(argv):
    return False
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', QUIET_CPP_LEVEL)
  with silenced_stderr():
    import tensorflow as tf
    tf.config.list_physical_devices()
    import keras  # noqa: F401  (its backend start-up logs too)
  return True


def quiet_loggers(flag_values=None) -> bool:
  """Python-side logs at WARNING (absl, TensorFlow, Keras) unless --verbosity was given.

  Call after the flags are parsed (absl applies --verbosity when it parses). Returns
  whether the loggers were quietened.
  """
  from absl import flags
  from absl import logging as absl_logging
  flag_values = flags.FLAGS if flag_values is None else flag_values
  if 'verbosity' in flag_values and flag_values['verbosity'].present:
    return False
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ('tensorflow', 'keras', 'absl'):
    logging.getLogger(name).setLevel(logging.WARNING)
  return True
