"""Shared helpers of test_export*.py and test_predict*.py (no tests here).

The CLI export of the tiny model is done once per pytest process (`exported_base`) and
reused by both test modules.
"""

import functools
import io
import os
import sys
import types

import numpy as np
from absl import flags
from PIL import Image

from tests import run_helpers

_EXPORTS = {}


def exported_base(model_dir, tmp_root):
  """BASE of a CLI export (`export.py`) of model_dir, version 1; made once per process."""
  if model_dir not in _EXPORTS:
    base = os.path.join(str(tmp_root), 'exports', 'tiny')
    result = run_helpers.run_script('export.py', f'--model_dir={model_dir}',
                                    f'--export_dir={base}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'to {base}/1 (version 1;' in result.stdout, result.stdout
    _EXPORTS[model_dir] = base
  return _EXPORTS[model_dir]


def run_flag_values(model_dir, *overrides):
  """A fresh absl FlagValues with config_flags' flags, parsed from model_dir/flags.cfg.

  (The global FLAGS is left alone: other tests may define these flags themselves.)
  """
  from faster_rcnn_tf import config_flags
  from faster_rcnn_tf.serving import run_dir
  fv = flags.FlagValues()

  def bound(name):
    fn = getattr(flags, name)
    return functools.partial(fn, flag_values=fv) if name.startswith('DEFINE') else fn

  shim = types.SimpleNamespace(**{n: bound(n) for n in dir(flags) if not n.startswith('_')})
  real = config_flags.flags
  config_flags.flags = shim
  try:
    config_flags.define_data_flags()
    config_flags.define_model_flags()
  finally:
    config_flags.flags = real
  lines = run_dir.flagfile_args(os.path.join(model_dir, 'flags.cfg'), fv)
  fv(['test', *lines, *overrides])
  return fv


def encode(array, fmt='PNG', **kwargs):
  """Encoded bytes of a uint8 [H, W, 3] array."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buf, fmt, **kwargs)
  return buf.getvalue()


def shapes_image(height, width, seed):
  """A uint8 [H, W, 3] picture with a few filled rectangles on a noisy background."""
  rng = np.random.default_rng(seed)
  image = rng.integers(80, 120, (height, width, 3)).astype(np.uint8)
  for _ in range(3):
    h, w = rng.integers(height // 5, height // 2), rng.integers(width // 5, width // 2)
    y, x = rng.integers(0, height - h), rng.integers(0, width - w)
    image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
  return image


def saved_model_cli():
  """The saved_model_cli script of this Python environment."""
  return os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
