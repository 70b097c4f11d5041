"""The inspect command (and the drawing helpers it uses)."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from faster_rcnn_tf import visualize
from faster_rcnn_tf.data import inspect
from tests.test_data_voc import CASES, _good_files, _write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_on_a_voc_folder_with_problems(tmp_path):
  files = _good_files()
  files.update(CASES['zero_area_box'][0])
  files['Annotations/c.xml'] = files['Annotations/good.xml'].replace('good', 'c')  # no image
  _write(str(tmp_path / 'voc'), files, ['good', 'bad', 'c'])
  summary = inspect.run(f'voc:{tmp_path}/voc', 'train', str(tmp_path / 'out'))
  assert summary['images'] == 2 and summary['candidate_images'] == 2
  assert summary['objects'] == 2 and summary['per_class'] == {'cat': 2}
  assert summary['problems']['zero_area_box'] == {'count': 1,
                                                  'examples': ['Annotations/bad.xml']}
  assert summary['problems']['missing_image']['count'] == 1
  grid = np.asarray(Image.open(summary['grid']))
  assert grid.ndim == 3 and grid.shape[2] == 3


def test_command_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, '-m', 'faster_rcnn_tf.data.inspect', '--dataset=shapes:train_images=6',
       f'--output_dir={tmp_path}', '--classes=circle,square', '--num_drawn=4'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary['images'] == 6 and summary['class_names'] == ['circle', 'square']
  assert sum(summary['per_class'].values()) == summary['objects']
  assert set(summary['per_class']) == {'circle', 'square'}
  assert os.path.exists(summary['grid']) and os.path.dirname(summary['grid']) == str(tmp_path)


def test_draw_boxes_outlines_the_box_pixels():
  image = np.zeros((30, 40, 3), np.uint8)
  drawn = visualize.draw_boxes(image, [[5, 10, 20, 30]], [''], colors=[(255, 0, 0)])
  assert drawn.shape == (30, 40, 3) and drawn.dtype == np.uint8 and not image.any()
  red = np.all(drawn == (255, 0, 0), axis=-1)
  rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
  assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (5, 20, 10, 30)
  assert red[5, 10:30].all() and red[19, 10:30].all() and red[5:20, 10].all()
  assert not red[8:17, 13:27].any()  # inside stays empty
  labelled = visualize.draw_boxes(image, [[15, 10, 25, 30]], ['RBC'])
  assert labelled[:15].any()  # the label sits above the box


def test_save_grid(tmp_path):
  path = visualize.save_grid([np.zeros((10, 20, 3), np.uint8), np.ones((15, 5, 3), np.uint8)],
                             str(tmp_path / 'g.png'), columns=2, gap=2)
  grid = np.asarray(Image.open(path))
  assert grid.shape == (15, 20 + 2 + 20, 3)
