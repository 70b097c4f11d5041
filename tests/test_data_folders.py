"""Folders as users hold them: VOC without ImageSets/, LabelImg, YOLO; hashed splits; a
folder of unreadable images. Built from a few real bccd images and compared with the VOC
original."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from faster_rcnn_tf.data import registry
from faster_rcnn_tf.data import voc
from faster_rcnn_tf.data import yolo
from tests import run_helpers
from tests.test_data_voc import _shared

# BloodImage_00338 has a zero-area box: every layout must drop it the same way.
STEMS = ['BloodImage_00001', 'BloodImage_00010', 'BloodImage_00100', 'BloodImage_00200',
         'BloodImage_00300', 'BloodImage_00338']


def _original():
  source = voc.VocSource(_shared('bccd'), 'all')
  return source, [source.load(source.split_ids.index(s)) for s in STEMS]


def _yolo_lines(record):
  h, w = record['image'].shape[:2]
  lines = []
  for (y0, x0, y1, x1), c in zip(record['boxes'].astype(np.float64), record['classes']):
    values = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
    lines.append(f'{c - 1} ' + ' '.join(repr(float(v)) for v in values))
  return '\n'.join(lines) + '\n'


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """{layout: folder} holding STEMS in each layout, and the original records."""
  bccd = _shared('bccd')
  source, originals = _original()
  root = tmp_path_factory.mktemp('folders')
  paths = {k: root / k for k in ('voc', 'labelimg', 'yolo_dirs', 'yolo_beside')}
  (paths['voc'] / 'Annotations').mkdir(parents=True)
  (paths['voc'] / 'JPEGImages').mkdir()
  paths['labelimg'].mkdir()
  (paths['yolo_dirs'] / 'images').mkdir(parents=True)
  (paths['yolo_dirs'] / 'labels').mkdir()
  paths['yolo_beside'].mkdir()
  for stem, record in zip(STEMS, originals):
    xml = os.path.join(bccd, 'Annotations', stem + '.xml')
    jpg = os.path.join(bccd, 'JPEGImages', stem + '.jpg')
    shutil.copy(xml, paths['voc'] / 'Annotations')
    shutil.copy(jpg, paths['voc'] / 'JPEGImages')
    shutil.copy(xml, paths['labelimg'])
    shutil.copy(jpg, paths['labelimg'])
    shutil.copy(jpg, paths['yolo_dirs'] / 'images')
    (paths['yolo_dirs'] / 'labels' / f'{stem}.txt').write_text(_yolo_lines(record))
    shutil.copy(jpg, paths['yolo_beside'])
    (paths['yolo_beside'] / f'{stem}.txt').write_text(_yolo_lines(record))
  names = source.class_names
  (paths['yolo_dirs'] / 'data.yaml').write_text(
      'path: .  # dataset root\ntrain: images\nnc: 3\nnames:\n' +
      ''.join(f'  {i}: {n}\n' for i, n in enumerate(names)))
  (paths['yolo_beside'] / 'classes.txt').write_text('\n'.join(names) + '\n')
  return paths, source, originals


SPECS = {'voc': 'voc', 'labelimg': 'voc', 'yolo_dirs': 'yolo', 'yolo_beside': 'yolo'}


@pytest.mark.parametrize('layout', list(SPECS))
def test_layouts_give_the_voc_originals_records(folders, layout):
  paths, original_source, originals = folders
  source = registry.get_source(f'{SPECS[layout]}:{paths[layout]}', 'all')
  assert source.class_names == original_source.class_names
  records = list(source.records())
  graph_records = list(source.as_dataset().as_numpy_iterator())  # decoded in TF ops
  assert source.reports_in_graph
  assert len(records) == len(graph_records) == len(STEMS)
  assert [int(r['image_id']) for r in records] == list(range(len(STEMS)))
  assert [int(r['image_id']) for r in graph_records] == list(range(len(STEMS)))
  for record, original, stem in list(zip(records, originals, STEMS)) + list(
      zip(graph_records, originals, STEMS)):
    np.testing.assert_array_equal(record['image'], original['image'], err_msg=stem)
    assert len(record['boxes']) == len(original['boxes']), stem
    np.testing.assert_allclose(record['boxes'], original['boxes'], atol=1e-4, err_msg=stem)
    np.testing.assert_array_equal(record['classes'], original['classes'], err_msg=stem)
    np.testing.assert_array_equal(record['difficult'], original['difficult'], err_msg=stem)
  if SPECS[layout] == 'voc':  # the zero-area box is reported, as in the original
    assert source.problems.summary()['zero_area_box']['count'] == 1


def _sides(folder, val_fraction):
  sides = {}
  for split in ('train', 'val'):
    source = voc.VocSource(str(folder), split, val_fraction=val_fraction)
    for i in range(len(source)):
      sides[source.image_key(i)] = split
  return sides


def test_hashed_split_is_stable_across_runs_and_added_images(folders, tmp_path, capfd):
  paths, _, _ = folders
  folder = tmp_path / 'voc'
  shutil.copytree(paths['voc'], folder)
  first = _sides(folder, 0.5)
  assert sorted(first) == STEMS   # train and val partition the folder
  assert set(first.values()) == {'train', 'val'}
  assert _sides(folder, 0.5) == first
  err = capfd.readouterr().err
  assert f'{folder}: no split files; split \'train\' is ' in err
  assert 'val_fraction=0.5' in err
  # image_ids index the 'all' list, so train and val ids never collide.
  train = voc.VocSource(str(folder), 'train', val_fraction=0.5)
  assert [int(r['image_id']) for r in train.records()] == [
      STEMS.index(s) for s in STEMS if first[s] == 'train']
  # Adding images moves no existing image to the other side.
  for k in range(6):
    shutil.copy(folder / 'Annotations' / f'{STEMS[0]}.xml',
                folder / 'Annotations' / f'added_{k}.xml')
    shutil.copy(folder / 'JPEGImages' / f'{STEMS[0]}.jpg',
                folder / 'JPEGImages' / f'added_{k}.jpg')
  after = _sides(folder, 0.5)
  assert {s: after[s] for s in STEMS} == first
  assert sorted(after) == sorted(STEMS + [f'added_{k}' for k in range(6)])
  # The fraction: 0 puts everything in train, 1 in val.
  assert set(_sides(folder, 0.0).values()) == {'train'}
  assert set(_sides(folder, 1.0).values()) == {'val'}


def test_splitless_folder_rejects_other_split_names(folders):
  paths, _, _ = folders
  with pytest.raises(ValueError, match="'all', 'train', 'val', 'test'"):
    registry.get_source(f'voc:{paths["voc"]}', 'trainval')
  with pytest.raises(ValueError, match="'all', 'train', 'val', 'test'"):
    registry.get_source(f'yolo:{paths["yolo_beside"]}', 'trainval')
  # 'test' is the held-out side: the same images as 'val'.
  val = registry.get_source(f'voc:{paths["voc"]}', 'val', val_fraction=0.5)
  test = registry.get_source(f'voc:{paths["voc"]}', 'test', val_fraction=0.5)
  assert [val.image_key(i) for i in range(len(val))] == [
      test.image_key(i) for i in range(len(test))]


def test_yolo_images_subfolders_are_the_splits_and_bad_lines_are_reported(folders, tmp_path):
  paths, _, originals = folders
  root = tmp_path / 'ultra'
  for split, stems in (('train', STEMS[:4]), ('val', STEMS[4:])):
    (root / 'images' / split).mkdir(parents=True)
    (root / 'labels' / split).mkdir(parents=True)
    for stem in stems:
      shutil.copy(paths['yolo_dirs'] / 'images' / f'{stem}.jpg', root / 'images' / split)
      shutil.copy(paths['yolo_dirs'] / 'labels' / f'{stem}.txt', root / 'labels' / split)
  (root / 'data.yaml').write_text("names: ['Platelets', 'RBC', \"WBC\"]  # three\n")
  # A class beyond the names, a polygon line and a zero-width box in the first val image.
  with open(root / 'labels' / 'val' / f'{STEMS[4]}.txt', 'a') as f:
    f.write('7 0.5 0.5 0.1 0.1\n1 0.1 0.1 0.2 0.2 0.3 0.3\n2 0.5 0.5 0 0.1\n')
  val = registry.get_source(f'yolo:{root}', 'val')
  assert val.num_images == 2 and val.class_names == ['Platelets', 'RBC', 'WBC']
  records = list(val.records())
  np.testing.assert_allclose(records[0]['boxes'], originals[4]['boxes'], atol=1e-4)
  problems = val.problems.summary()
  assert problems['unknown_class']['count'] == 1
  assert problems['invalid_box']['count'] == 1
  assert problems['zero_area_box']['count'] == 1
  assert problems['unknown_class']['examples'] == [f'labels/val/{STEMS[4]}.txt']
  assert registry.get_source(f'yolo:{root}', 'train').num_images == 4


@pytest.mark.parametrize('text,names', [
    ('names: [a, "b c", \'d\']\n', ['a', 'b c', 'd']),
    ('nc: 2\nnames:\n  - cat  # first\n  - dog\ntrain: x\n', ['cat', 'dog']),
    ('names:\n  1: dog\n  0: cat\n', ['cat', 'dog']),
    ('names: {0: cat, 1: "dog"}\n', ['cat', 'dog']),
    ('train: images\n', None),
])
def test_yaml_names_without_a_yaml_library(text, names):
  assert yolo.parse_yaml_names(text) == names


def test_yolo_folder_without_class_names_is_one_clear_error(tmp_path):
  (tmp_path / 'a.jpg').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match='classes.txt or data.yaml'):
    registry.get_source(f'yolo:{tmp_path}', 'all')


_DRIVER = '''
import sys
from absl import flags
import train
for args in sys.argv[1:]:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['train.py'] + args.split(' '))
  print('RETURN CODE', train.main(['train.py']), flush=True)
'''


def test_train_runs_on_each_layout_in_one_process(folders, tmp_path):
  paths, _, _ = folders
  from faster_rcnn_tf.data import convert  # pylint: disable=g-import-not-at-top
  convert.convert(registry.get_source(f'voc:{paths["voc"]}', 'all'),
                  str(tmp_path / 'records' / 'all'), num_shards=2)
  tfrecord_spec = f'tfrecord:{tmp_path}/records/all-*.tfrecord'
  layouts = {'voc': f'voc:{paths["voc"]}', 'labelimg': f'voc:{paths["labelimg"]}',
             'yolo_dirs': f'yolo:{paths["yolo_dirs"]}', 'tfrecord': tfrecord_spec}
  # The default --eval_split=test is the held-out ('val') side of a split-less folder.
  common = (f'--flagfile={run_helpers.TINY_CFG} --num_steps=2 --checkpoint_every=2 '
            '--train_split=train --val_fraction=0.5 --max_eval_images=2')
  runs = [f'{common} --dataset={spec} --model_dir={tmp_path / k}'
          for k, spec in layouts.items()]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  result = subprocess.run([sys.executable, '-c', _DRIVER, *runs], cwd=run_helpers.ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count('RETURN CODE 0') == 4, result.stdout + result.stderr[-3000:]
  assert result.stdout.count('Training done: step 2') == 4
  assert result.stdout.count('VOC07 mAP@0.5 on') == 4
  for k in layouts:
    assert (tmp_path / k / 'ckpt-2.index').exists()


def test_train_on_a_folder_of_unreadable_images_is_one_line(tmp_path):
  bccd = _shared('bccd')
  (tmp_path / 'Annotations').mkdir()
  (tmp_path / 'JPEGImages').mkdir()
  for stem in STEMS[:3]:
    shutil.copy(os.path.join(bccd, 'Annotations', stem + '.xml'), tmp_path / 'Annotations')
    (tmp_path / 'JPEGImages' / f'{stem}.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
  result = run_helpers.run_script(
      'train.py', f'--flagfile={run_helpers.TINY_CFG}', f'--dataset=voc:{tmp_path}',
      '--train_split=all', '--final_eval=false', f'--model_dir={tmp_path / "run"}',
      timeout=300)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr + result.stdout
  errors = [l for l in result.stderr.splitlines() if l.startswith('train.py: error:')]
  assert len(errors) == 1, result.stderr[-3000:]
  line = errors[0]
  assert f'voc:{tmp_path}' in line and "split 'all'" in line
  assert 'unreadable_image x3' in line and f'JPEGImages/{STEMS[0]}.jpg' in line


def _inspect(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  return subprocess.run([sys.executable, '-m', 'faster_rcnn_tf.data.inspect', *args],
                        cwd=run_helpers.ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_inspect_reads_a_labelimg_folder_and_names_a_bad_one(folders, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  paths, _, originals = folders
  result = _inspect(f'--dataset=voc:{paths["labelimg"]}', '--split=all', '--output_dir=')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary['images'] == len(STEMS)
  assert summary['objects'] == sum(len(r['classes']) for r in originals)
  result = _inspect(f'--dataset=voc:{tmp_path}/missing', '--output_dir=')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert f'{tmp_path}/missing does not exist' in result.stderr.strip().splitlines()[-1]
