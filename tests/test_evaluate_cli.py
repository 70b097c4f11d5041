"""evaluate.py as a user runs it: a trained checkpoint (train.py's mAP, and a floor on it),
re-scoring its detections file, a COCO json dataset against pycocotools, an export.py
SavedModel, bad input.

The checkpoint is the tiny model that memorized four shapes images (conftest's
`memorized_model_dir`), scored on those images: a working evaluation gives a high mAP, so
the equality with train.py's number cannot hold by two near-zero values agreeing (boxes
mapped to the wrong pixels, classes shifted, ground truth misread or weights not loaded
all bring it near 0).

Each evaluate.py process spends most of its time importing TensorFlow, so besides the real
command-line run of the checkpoint, the other command lines run one after another in ONE
process (`_DRIVER`: evaluate.py's own flag parser and main, per command line; main's return
value is the exit status app.run gives).
"""

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
MAP_FLOOR = 0.6  # the memorized run: 0.39 at step 50, 0.82 at 100, 1.0 at 150

_DRIVER = r"""
import contextlib, io, json, sys
from absl import flags
import evaluate
results = {}
for name, argv in json.loads(sys.argv[1]).items():
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    flags.FLAGS.unparse_flags()
    try:
      evaluate._flags_parser(['evaluate.py'] + argv)
      code = evaluate.main(['evaluate.py'])
    except SystemExit as e:
      code = e.code
  results[name] = {'code': code, 'stdout': out.getvalue(), 'stderr': err.getvalue()}
print('RESULTS' + json.dumps(results))
"""


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)


def _popen(script, *args):
  return subprocess.Popen([sys.executable, os.path.join(run_helpers.ROOT, script), *args],
                          cwd=run_helpers.ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _read(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _error_line(stderr):
  lines = [line for line in stderr.splitlines() if line.startswith('evaluate.py: error:')]
  assert len(lines) == 1, stderr
  return lines[0]


# ---------------------------------------------------------------- test data

SIZES = {3: (40, 60), 8: (50, 50), 21: (30, 20)}


def _coco_dataset(folder):
  """A tiny COCO dataset: non-contiguous ids, a crowd region, annotated areas that are not
  box areas (COCO's are mask areas), an image without objects; and detections."""
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


# ---------------------------------------------------------------- the runs


@pytest.fixture(scope='module')
def runs(tiny_model_dir, memorized_model_dir, tmp_path_factory):
  """Every evaluate.py run of this module, done once.

  Returns {'dir': tmp folder, 'model_run': (out_dir, CompletedProcess), 'driver': {case:
  {'code', 'stdout', 'stderr'}}, 'kept', 'bad_dets', 'coco_files'}.
  """
  tmp = tmp_path_factory.mktemp('evaluate_cli')
  memorized, _ = memorized_model_dir
  # export.py runs while the checkpoint is evaluated.
  export = _popen('export.py', f'--model_dir={memorized}', f'--export_dir={tmp}/export')
  model_out = tmp / 'model_run'
  model_run = run_helpers.run_script('evaluate.py', f'--model_dir={memorized}',
                                     '--eval_split=train', f'--metric={METRICS}',
                                     f'--output_dir={model_out}', '--num_sample_images=3',
                                     timeout=300)
  assert model_run.returncode == 0, model_run.stdout + model_run.stderr

  ann, dets = _coco_dataset(tmp / 'coco')
  bad_dets = tmp / 'bad_dets.json'
  bad_dets.write_text(json.dumps(
      [{'image_id': 0, 'category_id': 1, 'bbox': [1, 2, 3, 4], 'score': 0.5},
       {'image_id': 1234, 'category_id': 1, 'bbox': [1, 2, 3, 4], 'score': 0.5}]))
  kept = tmp / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine')

  run = f'--model_dir={tiny_model_dir}'
  mem_run = [f'--model_dir={memorized}', '--eval_split=train']
  cases = {
      'rescore': mem_run + [f'--detections={model_out}/detections.json',
                            f'--metric={METRICS}'],
      'coco': [f'--dataset=coco:{ann}', f'--detections={dets}', '--metric=coco,voc07'],
      'bad_backbone': [run, '--backbone=mobilenet_v2'],
      'bad_classes': [run, '--classes=circle,square'],
      'bad_empty': [run, '--shapes_test_images=0'],
      'bad_metric': [run, '--metric=voc07,map'],
      'bad_flag': [run, '--num_step=3'],
      'bad_nothing': [],
      'bad_detections': [run, f'--detections={bad_dets}'],   # into an existing folder
  }
  e_out, e_err = export.communicate(timeout=300)
  assert export.returncode == 0, e_out + e_err
  cases['saved_model'] = mem_run + [f'--saved_model={tmp}/export', f'--metric={METRICS}']
  outputs = {name: tmp / f'out_{name}' for name in cases}
  outputs['bad_detections'] = kept
  argvs = {name: args + [f'--output_dir={outputs[name]}'] for name, args in cases.items()}
  driver = subprocess.run([sys.executable, '-c', _DRIVER, json.dumps(argvs)],
                          cwd=run_helpers.ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
  marker = [line for line in driver.stdout.splitlines() if line.startswith('RESULTS')]
  assert marker, driver.stdout + driver.stderr
  return {'dir': tmp, 'model_run': (model_out, model_run), 'kept': kept, 'bad_dets': bad_dets,
          'coco_files': (ann, dets), 'driver': json.loads(marker[0][len('RESULTS'):])}


def _case(runs, name):
  result = runs['driver'][name]
  assert result['code'] == 0, result['stdout'] + result['stderr']
  return runs['dir'] / f'out_{name}'


# ---------------------------------------------------------------- acceptance


def test_checkpoint_evaluation_gives_the_map_train_py_printed(memorized_model_dir, runs):
  out, result = runs['model_run']
  final = _read(os.path.join(memorized_model_dir[0], 'final_eval.json'))
  metrics = _read(out / 'metrics.json')
  assert metrics['metrics']['voc07/mAP'] >= MAP_FLOOR, metrics['metrics']
  assert metrics['metrics']['voc07/mAP'] == final['voc07_map@0.5']  # exactly
  assert f"VOC07 11-point mAP@0.5 on shapes train: {final['voc07_map@0.5']:.4f}" in (
      result.stdout)
  assert metrics['metrics']['voc/mAP'] >= MAP_FLOOR and metrics['metrics']['coco/AP50'] >= (
      MAP_FLOOR)
  assert metrics['checkpoint_step'] == final['step'] == run_helpers.MEMORIZE_STEPS
  assert metrics['split'] == 'train'
  assert metrics['metric_names'] == METRICS.split(',')
  assert set(metrics['metrics']) >= {'voc07/mAP', 'voc/mAP', 'coco/AP', 'coco/AP50', 'coco/ARl'}
  assert [c['name'] for c in metrics['per_class']] == ['circle', 'square', 'triangle']
  assert all('voc07/AP' in c and 'coco/AP' in c for c in metrics['per_class'])
  assert metrics['num_images'] == run_helpers.MEMORIZE_IMAGES
  detections = _read(out / 'detections.json')
  assert detections and {d['image_id'] for d in detections} <= set(
      range(run_helpers.MEMORIZE_IMAGES))
  assert {d['category_id'] for d in detections} <= {1, 2, 3}
  assert sorted(os.listdir(out / 'pr_curves')) == [
      'pr_001_circle.png', 'pr_002_square.png', 'pr_003_triangle.png']
  samples = sorted(os.listdir(out / 'samples'))
  assert samples == ['sample_00_image_0.png', 'sample_01_image_1.png', 'sample_02_image_2.png']
  with Image.open(out / 'samples' / samples[0]) as im:
    assert im.size[1] >= 64 * 4  # small images are enlarged for readable labels
  for row in ('circle', 'square', 'triangle', 'mean'):
    assert row in result.stdout  # the per-class table


def test_rescoring_the_written_detections_gives_exactly_the_same_numbers(runs):
  out, _ = runs['model_run']
  again = _case(runs, 'rescore')
  first = _read(out / 'metrics.json')
  second = _read(again / 'metrics.json')
  assert second['metrics'] == first['metrics']
  assert second['per_class'] == first['per_class']
  assert second['checkpoint_step'] is None
  assert _read(again / 'detections.json') == _read(out / 'detections.json')


def test_coco_json_dataset_metrics_equal_pycocotools_own(runs):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  ann, dets = runs['coco_files']
  out = _case(runs, 'coco')
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


def test_exported_saved_model_gives_the_checkpoint_numbers(runs):
  out = _case(runs, 'saved_model')
  checkpoint_out, _ = runs['model_run']
  metrics = _read(out / 'metrics.json')
  assert metrics['metrics']['voc07/mAP'] >= MAP_FLOOR
  assert metrics['metrics'] == _read(checkpoint_out / 'metrics.json')['metrics']
  assert metrics['saved_model'].endswith('export') and metrics['checkpoint_step'] is None
  assert len(_read(out / 'detections.json')) == len(_read(checkpoint_out / 'detections.json'))


# ---------------------------------------------------------------- bad input

BAD = {
    'bad_backbone': ['ckpt-6', 'does not fit', '--backbone=mobilenet_v2',
                     'trained with --backbone=tiny'],
    'bad_classes': ['ckpt-6', 'trained for 3 classes', 'has 2 (circle, square)'],
    'bad_empty': ['--dataset=shapes --eval_split=test', 'no images'],
    'bad_metric': ["--metric: unknown metric 'map'"],
    'bad_flag': ['num_step'],
    'bad_nothing': ['nothing to evaluate'],
}


@pytest.mark.parametrize('name', sorted(BAD))
def test_bad_input_is_one_clear_line_with_status_2_and_no_output(runs, name):
  result = runs['driver'][name]
  assert result['code'] == 2, result['stderr']
  error = _error_line(result['stderr'])
  for text in BAD[name]:
    assert text in error, error
  assert not (runs['dir'] / f'out_{name}').exists()


def test_bad_detections_file_leaves_an_existing_output_folder_alone(runs):
  result = runs['driver']['bad_detections']
  assert result['code'] == 2, result['stderr']
  error = _error_line(result['stderr'])
  assert f"--detections: {runs['bad_dets']}: entry 1: unknown image_id 1234" in error
  assert os.listdir(runs['kept']) == ['notes.txt']
  assert not [n for n in os.listdir(runs['dir']) if 'staging' in n]


def test_checkpoint_flag_forms(tiny_model_dir):
  from faster_rcnn_tf import runs as runs_lib
  latest = os.path.join(tiny_model_dir, 'ckpt-6')
  assert runs_lib.resolve_checkpoint(tiny_model_dir) == latest
  assert runs_lib.resolve_checkpoint(None, tiny_model_dir) == latest
  assert runs_lib.resolve_checkpoint(tiny_model_dir, 'ckpt-3') == os.path.join(
      tiny_model_dir, 'ckpt-3')
  assert runs_lib.checkpoint_step(os.path.join(tiny_model_dir, 'ckpt-3')) == 3
  with pytest.raises(runs_lib.RunError, match='checkpoint=ckpt-9: not a checkpoint'):
    runs_lib.resolve_checkpoint(tiny_model_dir, 'ckpt-9')
  with pytest.raises(runs_lib.RunError, match='/no/such/run: no such folder'):
    runs_lib.resolve_checkpoint('/no/such/run')
