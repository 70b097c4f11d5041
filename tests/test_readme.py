"""The README's Python example, run as written (on the tiny run, copied to the path the
example names, and a shapes image), in a fresh interpreter."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from tests import run_helpers

MARKER = '<!-- README example: tests/test_readme.py runs this block as written. -->'


def _example():
  with open(os.path.join(run_helpers.ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  after = text[text.index(MARKER) + len(MARKER):]
  match = re.match(r'\s*```python\n(.*?)```', after, re.S)
  assert match, 'the README example block moved'
  return match.group(1)


def test_readme_example_runs_as_written(tiny_model_dir, tmp_path):
  from faster_rcnn_tf.data import shapes
  code = _example()
  assert "load_model('runs/shapes_quickstart')" in code and "'shapes.png'" in code
  shutil.copytree(tiny_model_dir, tmp_path / 'runs' / 'shapes_quickstart')
  image = shapes.ShapesSource('test', num_images=1, image_size=64, seed=5).load(0)['image']
  image = np.asarray(image, np.uint8)
  Image.fromarray(image).save(tmp_path / 'shapes.png')
  env = dict(os.environ, PYTHONPATH=run_helpers.ROOT)
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  lines = [line for line in result.stdout.splitlines() if ' at [ymin, xmin, ymax, xmax] ' in line]
  assert lines, result.stdout
  names = {line.split()[0] for line in lines}
  assert names <= {'circle', 'square', 'triangle'}
  scores = np.array([float(line.split()[1]) for line in lines])
  assert np.all(np.diff(scores) <= 1e-9) and np.all((scores >= 0) & (scores <= 1))
  with Image.open(tmp_path / 'detections.png') as picture:
    drawn = np.asarray(picture.convert('RGB'))
  assert drawn.shape == image.shape
  # Boxes are drawn exactly for the detections scoring 0.5 or more.
  assert (drawn != image).any() == bool((scores >= 0.5).any())
