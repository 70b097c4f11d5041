"""One run folder through every consumer: evaluate.py, export.py (+ predict.py on the
SavedModel) and predict.py on the checkpoint give the same detections; runs.load_model
on run folders old and new, SavedModels and bad paths; a quiet console."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from faster_rcnn_tf import runs
from tests import conftest
from tests import run_helpers

NUM_IMAGES = 2


def _popen(script, *args):
  env = dict(os.environ, PYTHONPATH=run_helpers.ROOT)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.Popen([sys.executable, os.path.join(run_helpers.ROOT, script), *args],
                          cwd=run_helpers.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc, what):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, f'{what}: {out}\n{err}'
  return out, err


@pytest.fixture(scope='module')
def consumers(tiny_model_dir, tmp_path_factory):
  """The first test images as PNG files, and every script's output on them."""
  from faster_rcnn_tf.data import registry
  work = tmp_path_factory.mktemp('consumers')
  config = runs.read_run_config(tiny_model_dir)
  d = config.data
  source = registry.get_source(d.dataset, d.eval_split, seed=config.train.seed,
                               classes=list(config.class_names),
                               shapes_options=dict(image_size=d.shapes_image_size,
                                                   train_images=d.shapes_train_images,
                                                   test_images=d.shapes_test_images))
  images = work / 'images'
  images.mkdir()
  for i, record in zip(range(NUM_IMAGES), source.records()):
    Image.fromarray(np.asarray(record['image'], np.uint8)).save(images / f'{i}.png')
  logs = {}
  first = {
      'evaluate': _popen('evaluate.py', f'--model_dir={tiny_model_dir}',
                         f'--max_eval_images={NUM_IMAGES}', f'--output_dir={work}/eval'),
      'export': _popen('export.py', f'--model_dir={tiny_model_dir}',
                       f'--export_dir={work}/export'),
      'predict_checkpoint': _popen('predict.py', f'--model_dir={tiny_model_dir}',
                                   f'--output_dir={work}/predict_checkpoint', '--nodraw',
                                   str(images)),
  }
  for name, proc in first.items():
    logs[name] = _finish(proc, name)
  logs['predict_saved_model'] = _finish(
      _popen('predict.py', f'--saved_model={work}/export', '--nodraw',
             f'--output_dir={work}/predict_saved_model', str(images)), 'predict_saved_model')
  return work, logs


def _predict_records(path):
  with open(path) as f:
    return sorted(json.load(f)['images'], key=lambda r: r['file'])


def _as_rows(boxes_yxyx, scores, classes):
  """[class, score, ymin, xmin, ymax, xmax] rows sorted by class, then score."""
  rows = np.concatenate([np.asarray(classes, np.float64)[:, None],
                         np.asarray(scores, np.float64)[:, None],
                         np.asarray(boxes_yxyx, np.float64).reshape(-1, 4)], axis=1)
  return rows[np.lexsort((-rows[:, 1], rows[:, 0]))]


def test_evaluate_export_and_predict_restore_the_same_detections(consumers):
  work, _ = consumers
  checkpoint = _predict_records(work / 'predict_checkpoint' / 'detections.json')
  saved = _predict_records(work / 'predict_saved_model' / 'detections.json')
  with open(work / 'eval' / 'detections.json') as f:
    evaluated = json.load(f)
  assert [os.path.basename(r['file']) for r in checkpoint] == ['0.png', '1.png']
  for i, (a, b) in enumerate(zip(checkpoint, saved)):
    assert a['num_detections'] == b['num_detections'] > 0
    np.testing.assert_allclose(_as_rows(a['boxes'], a['scores'], a['classes']),
                               _as_rows(b['boxes'], b['scores'], b['classes']), atol=1e-4)
    # evaluate.py's COCO results: [x, y, w, h] in the same original pixels.
    mine = [d for d in evaluated if d['image_id'] == i]
    boxes = [[y, x, y + h, x + w] for x, y, w, h in (d['bbox'] for d in mine)]
    assert len(mine) == a['num_detections']
    np.testing.assert_allclose(
        _as_rows(boxes, [d['score'] for d in mine], [d['category_id'] for d in mine]),
        _as_rows(a['boxes'], a['scores'], a['classes']), atol=1e-3)


def test_the_scripts_print_no_library_log_lines(tiny_model_dir, consumers):
  _, logs = consumers
  with open(os.path.join(os.path.dirname(tiny_model_dir), conftest.CONSOLE_FILE)) as f:
    train = json.load(f)
  logs = dict(logs, train=(train['stdout'], train['stderr']))
  for name, (out, err) in logs.items():
    found = run_helpers.LIBRARY_LOG_LINE.findall(out + '\n' + err)
    assert not found, f'{name}: {found}\n{err}'
  assert 'VOC07 mAP@0.5 on shapes test' in train['stdout']
  assert 'Exported' in logs['export'][0]


def test_verbosity_brings_the_library_logs_back(tmp_path):
  result = run_helpers.run_script('predict.py', '--verbosity=0', f'--output_dir={tmp_path}',
                                  str(tmp_path / 'none.png'), timeout=300)
  assert result.returncode == 2
  assert run_helpers.LIBRARY_LOG_LINE.search(result.stderr), result.stderr


def test_load_model_of_a_run_folder_its_best_and_a_checkpoint(tiny_model_dir):
  latest = runs.load_model(tiny_model_dir)
  assert latest.kind == 'run' and latest.step == 6
  assert latest.checkpoint == os.path.join(tiny_model_dir, 'ckpt-6')
  assert latest.class_names == ['circle', 'square', 'triangle']
  assert (latest.min_size, latest.max_size) == (64, 64)
  earlier = runs.load_model(os.path.join(tiny_model_dir, 'ckpt-3'))
  assert earlier.checkpoint == os.path.join(tiny_model_dir, 'ckpt-3') and earlier.step == 3
  assert runs.load_model(tiny_model_dir, checkpoint='ckpt-3').step == 3


def _detect(loaded, images):
  out = loaded.detector().serve_images(images)
  return {k: np.asarray(v) for k, v in out.items()}


def test_an_older_run_folder_loads_with_the_same_detections(tiny_model_dir, tmp_path):
  old = tmp_path / 'old_run'
  shutil.copytree(tiny_model_dir, old)
  config = runs.read_run_config(tiny_model_dir)
  (old / runs.RUN_CONFIG_FILE).unlink()  # as written before run_config.json existed
  (old / runs.CLASSES_FILE).write_text(json.dumps({'class_names': list(config.class_names)}))
  images = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
  images[:, 16:40, 20:44] = 250
  new = _detect(runs.load_model(tiny_model_dir), images)
  loaded = runs.load_model(str(old))
  assert loaded.config == config
  older = _detect(loaded, images)
  for name in new:
    np.testing.assert_array_equal(new[name], older[name])


def test_bad_paths_are_one_line_naming_the_path(tmp_path):
  with pytest.raises(runs.RunError, match='nowhere: no such file or folder'):
    runs.load_model(str(tmp_path / 'nowhere'))
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(runs.RunError, match='notes.txt: not a .keras file'):
    runs.load_model(str(tmp_path / 'notes.txt'))
  with pytest.raises(runs.RunError, match='not a training run folder'):
    runs.load_model(str(tmp_path))
  with pytest.raises(runs.RunError, match='no saved_model.pb there nor in a numeric'):
    runs.resolve_saved_model(str(tmp_path))


def test_saved_model_versions_resolve_to_the_highest(consumers):
  work, _ = consumers
  base = str(work / 'export')
  assert runs.resolve_saved_model(base) == os.path.join(base, '1')
  assert runs.resolve_saved_model(os.path.join(base, '1')) == os.path.join(base, '1')
  loaded = runs.load_model(base)
  assert loaded.kind == 'saved_model' and loaded.class_names == ['circle', 'square',
                                                                 'triangle']
  with pytest.raises(runs.RunError, match='holds its weights'):
    runs.load_model(base, checkpoint='ckpt-3')


def test_a_keras_file_saved_from_a_run_loads_with_the_same_detections(tiny_model_dir,
                                                                      tmp_path):
  run = runs.load_model(tiny_model_dir)
  path = str(tmp_path / 'tiny.keras')
  run.model.save(path)
  loaded = runs.load_model(path)
  assert loaded.kind == 'keras' and loaded.config is None
  # The .keras file carries what the run folder's run_config.json gave.
  assert loaded.class_names == ['circle', 'square', 'triangle']
  assert (loaded.min_size, loaded.max_size) == (64, 64)
  image = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)
  image[10:30, 20:50] = 250
  want, got = run.detect(image)[0], loaded.detect(image)[0]
  assert len(want.scores) > 0
  assert got.class_names == want.class_names
  np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
  np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
  # Boxes are in the 48 x 80 original image, not the model's resized one.
  assert np.all(want.boxes >= 0) and np.all(want.boxes[:, [0, 2]] <= 48)
  assert np.all(want.boxes[:, [1, 3]] <= 80)
  with pytest.raises(runs.RunError, match='checkpoint=ckpt-3'):
    runs.load_model(path, checkpoint='ckpt-3')
