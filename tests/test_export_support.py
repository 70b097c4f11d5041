"""Shared helpers of test_export*.py and test_predict*.py (no tests here).

The CLI export of the tiny model is done once per pytest process (`exported_base`) and
reused by both test modules.
"""

import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

from tests import run_helpers

_EXPORTS = {}
_CACHE = {}


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


def loaded_saved_model(path):
  """tf.saved_model.load(path), loaded once per process."""
  import tensorflow as tf
  key = ('loaded', path)
  if key not in _CACHE:
    _CACHE[key] = tf.saved_model.load(path)
  return _CACHE[key]


def reference_module(model_dir):
  """(DetectionModule restored from model_dir in this process, class names); cached."""
  from faster_rcnn_tf import runs
  key = ('module', model_dir)
  if key not in _CACHE:
    loaded = runs.load_model(model_dir)
    _CACHE[key] = (loaded.detector(), list(loaded.class_names))
  return _CACHE[key]


def run_config(model_dir, **execution):
  """The RunConfig of model_dir, with execution settings replaced (e.g.
  detection_nms_method='batched')."""
  import dataclasses
  from faster_rcnn_tf import runs
  config = runs.read_run_config(model_dir)
  return config.replace(execution=dataclasses.replace(config.execution, **execution))


def encode(array, fmt='PNG', **kwargs):
  """Encoded bytes of a uint8 [H, W, 3] array."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buf, fmt, **kwargs)
  return buf.getvalue()


def flat_png(height, width, rgb):
  """A PNG of one colour, written directly (much faster than Pillow for huge sizes)."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  row = b'\x00' + bytes(rgb) * width
  packer = zlib.compressobj(1)
  data = b''.join([packer.compress(row) for _ in range(height)] + [packer.flush()])
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', data) +
          chunk(b'IEND', b''))


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
