"""evaluate.py as a user runs it (subprocesses): the quickstart-style checkpoint, re-scoring
its detections file, a COCO json dataset against pycocotools, bad input."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests import run_helpers

METRICS = 'voc07,voc,coco'


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)


def _evaluate(*args):
  result = run_helpers.run_script('evaluate.py', *args, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  return result


def _read(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def model_run(tiny_model_dir, tmp_path_factory):
  """evaluate.py --model_dir=<the tiny run> with every metric, into an output folder."""
  out = tmp_path_factory.mktemp('eval') / 'model_run'
  result = _evaluate(f'--model_dir={tiny_model_dir}', f'--metric={METRICS}',
                     f'--output_dir={out}', '--num_sample_images=3')
  return str(out), result


def test_checkpoint_evaluation_gives_the_map_train_py_printed(tiny_model_dir, model_run):
  out, result = model_run
  final = _read(os.path.join(tiny_model_dir, 'final_eval.json'))
  metrics = _read(os.path.join(out, 'metrics.json'))
  assert metrics['metrics']['voc07/mAP'] == final['voc07_map@0.5']  # exactly
  assert f"VOC07 11-point mAP@0.5 on shapes test: {final['voc07_map@0.5']:.4f}" in result.stdout
  assert metrics['checkpoint_step'] == final['step'] and metrics['split'] == 'test'
  assert metrics['metric_names'] == METRICS.split(',')
  assert set(metrics['metrics']) >= {'voc07/mAP', 'voc/mAP', 'coco/AP', 'coco/AP50', 'coco/ARl'}
  assert [c['name'] for c in metrics['per_class']] == ['circle', 'square', 'triangle']
  assert all('voc07/AP' in c and 'coco/AP' in c for c in metrics['per_class'])
  assert metrics['num_images'] == 8
  detections = _read(os.path.join(out, 'detections.json'))
  assert detections and {d['image_id'] for d in detections} <= set(range(8))
  assert {d['category_id'] for d in detections} <= {1, 2, 3}
  assert sorted(os.listdir(os.path.join(out, 'pr_curves'))) == [
      'pr_001_circle.png', 'pr_002_square.png', 'pr_003_triangle.png']
  samples = sorted(os.listdir(os.path.join(out, 'samples')))
  assert samples == ['sample_00_image_0.png', 'sample_01_image_1.png', 'sample_02_image_2.png']
  with Image.open(os.path.join(out, 'samples', samples[0])) as im:
    assert im.size[0] >= 64 * 4  # small images are enlarged for readable labels
  for row in ('circle', 'square', 'triangle', 'mean'):
    assert row in result.stdout  # the per-class table


def test_rescoring_the_written_detections_gives_exactly_the_same_numbers(
    tiny_model_dir, model_run, tmp_path):
  out, _ = model_run
  again = tmp_path / 'rescored'
  _evaluate(f'--model_dir={tiny_model_dir}', f'--detections={out}/detections.json',
            f'--metric={METRICS}', f'--output_dir={again}')
  first = _read(os.path.join(out, 'metrics.json'))
  second = _read(again / 'metrics.json')
  assert second['metrics'] == first['metrics']
  assert second['per_class'] == first['per_class']
  assert second['checkpoint_step'] is None
  assert _read(again / 'detections.json') == _read(os.path.join(out, 'detections.json'))


# ---------------------------------------------------------------- COCO json dataset

SIZES = {3: (40, 60), 8: (50, 50), 21: (30, 20)}


def _coco_dataset(folder):
  """A tiny COCO dataset: non-contiguous ids, a crowd region, annotated areas that are not
  box areas (COCO's are mask areas), an image without objects."""
  os.makedirs(folder / 'images')
  images = []
  for image_id, (h, w) in SIZES.items():
    name = f'im{image_id}.png'
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(folder / 'images' / name)
    images.append({'id': image_id, 'file_name': name, 'height': h, 'width': w})
  anns = [
      (1, 3, 7, [5, 4, 20, 15], 200.0, 0), (2, 3, 2, [30, 10, 25, 25], 500.0, 0),
      (3, 3, 7, [0, 25, 12, 12], 100.0, 1), (4, 8, 2, [10, 10, 30, 30], 700.0, 0),
      (5, 8, 2, [1, 1, 8, 9], 60.0, 0), (6, 8, 7, [20, 5, 25, 40], 900.0, 0)]
  data = {'images': images,
          'categories': [{'id': 7, 'name': 'dog'}, {'id': 2, 'name': 'cat'}],
          'annotations': [{'id': i, 'image_id': im, 'category_id': c, 'bbox': b, 'area': a,
                           'iscrowd': crowd} for i, im, c, b, a, crowd in anns]}
  (folder / 'ann.json').write_text(json.dumps(data))
  dets = [
      {'image_id': 3, 'category_id': 7, 'bbox': [5.5, 4, 19, 15], 'score': 0.9},
      {'image_id': 3, 'category_id': 7, 'bbox': [1, 26, 10, 10], 'score': 0.8},   # crowd
      {'image_id': 3, 'category_id': 2, 'bbox': [31, 12, 22, 22], 'score': 0.7},
      {'image_id': 8, 'category_id': 2, 'bbox': [11, 9, 30, 31], 'score': 0.95},
      {'image_id': 8, 'category_id': 2, 'bbox': [10, 10, 30, 30], 'score': 0.5},  # duplicate
      {'image_id': 8, 'category_id': 7, 'bbox': [20, 8, 25, 30], 'score': 0.6},
      {'image_id': 21, 'category_id': 2, 'bbox': [2, 2, 10, 10], 'score': 0.3},   # no objects
      {'image_id': 8, 'category_id': 2, 'bbox': [2, 1, 7, 9], 'score': 0.2},
  ]
  (folder / 'dets.json').write_text(json.dumps(dets))
  return folder / 'ann.json', folder / 'dets.json'


def test_coco_json_dataset_metrics_equal_pycocotools_own(tmp_path):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  ann, dets = _coco_dataset(tmp_path)
  out = tmp_path / 'out'
  _evaluate(f'--dataset=coco:{ann}', f'--detections={dets}', '--metric=coco,voc07',
            f'--output_dir={out}')
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(ann))
    coco_eval = COCOeval(gt, gt.loadRes(str(dets)), iouType='bbox')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  names = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm',
           'ARl')
  metrics = _read(out / 'metrics.json')
  assert {n: metrics['metrics'][f'coco/{n}'] for n in names} == dict(
      zip(names, [float(v) for v in coco_eval.stats]))
  assert metrics['coco_ground_truth'] == 'annotations file'
  assert [c['name'] for c in metrics['per_class']] == ['cat', 'dog']  # by category id
  assert metrics['category_ids'] == [2, 7]
  assert _read(out / 'detections.json') == _read(dets)


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_clear_line_and_writes_nothing(tiny_model_dir, tmp_path):
  bad_dets = tmp_path / 'bad_dets.json'
  bad_dets.write_text(json.dumps([{'image_id': 0, 'category_id': 1, 'bbox': [1, 2, 3, 4],
                                   'score': 0.5},
                                  {'image_id': 1234, 'category_id': 1, 'bbox': [1, 2, 3, 4],
                                   'score': 0.5}]))
  kept = tmp_path / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine')
  run = f'--model_dir={tiny_model_dir}'
  cases = {
      'backbone': ([run, '--backbone=mobilenet_v2'],
                   ['ckpt-6', 'does not fit', '--backbone=mobilenet_v2',
                    'trained with --backbone=tiny']),
      'classes': ([run, '--classes=circle,square'],
                  ['ckpt-6', 'trained for 3 classes', 'has 2 (circle, square)']),
      'empty': ([run, '--shapes_test_images=0'],
                ['--dataset=shapes --eval_split=test', 'no images']),
      'detections': ([run, f'--detections={bad_dets}'],
                     ['--detections', str(bad_dets), 'entry 1: unknown image_id 1234']),
  }
  procs = {}
  for name, (args, _) in cases.items():  # concurrently: each is mostly TensorFlow's import
    out = kept if name == 'detections' else tmp_path / f'out_{name}'
    procs[name] = subprocess.Popen(
        [sys.executable, os.path.join(run_helpers.ROOT, 'evaluate.py'), *args,
         f'--output_dir={out}'], cwd=run_helpers.ROOT, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, (name, stdout, stderr)
    error = [line for line in stderr.splitlines() if line.startswith('evaluate.py: error:')]
    assert len(error) == 1, (name, stderr)
    for expected in cases[name][1]:
      assert expected in error[0], (name, error[0])
  assert sorted(os.listdir(tmp_path)) == ['bad_dets.json', 'kept']  # no output, no staging
  assert os.listdir(kept) == ['notes.txt']
