"""evaluate.py's building blocks, in-process: flag precedence, all-or-nothing output,
detections-file validation, dataset ids (VOC folders), the SavedModel contract."""

import json
import os

import numpy as np
import pytest
from absl import flags
from PIL import Image

from faster_rcnn_tf import config as config_lib
from faster_rcnn_tf import config_flags
from faster_rcnn_tf import runs
from faster_rcnn_tf.evaluation import run_model
from faster_rcnn_tf.evaluation import saved_model_runner
from faster_rcnn_tf.evaluation import scoring
from faster_rcnn_tf.evaluation import staging
from faster_rcnn_tf.evaluation.errors import EvaluationError

# ---------------------------------------------------------------- flag sources


def _flag_values():
  fv = flags.FlagValues()
  flags.DEFINE_string('dataset', 'shapes', '', flag_values=fv)
  flags.DEFINE_string('backbone', 'vgg16', '', flag_values=fv)
  flags.DEFINE_integer('eval_batch_size', 4, '', flag_values=fv)
  flags.DEFINE_bool('flip', True, '', flag_values=fv)
  flags.DEFINE_string('model_dir', None, '', flag_values=fv)
  flags.DEFINE_string('checkpoint', None, '', flag_values=fv)
  flags.DEFINE_string('output_dir', None, '', flag_values=fv)
  return fv


def _write(path, lines):
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def test_run_config_supplies_settings_and_the_command_line_wins(tmp_path):
  run = config_lib.RunConfig(class_names=('a', 'b'))
  run.data.dataset, run.model.backbone, run.data.flip = 'voc:/data/voc', 'tiny', False
  run.train.eval_batch_size = 8
  fv = _flag_values()
  config_flags.parse_argv(fv, ['prog', '--model_dir=/x', '--eval_batch_size=2'], 'prog')
  config = config_lib.RunConfig.from_flags(fv, base=run)
  assert (config.data.dataset, config.model.backbone, config.data.flip) == (
      'voc:/data/voc', 'tiny', False)
  assert config.train.eval_batch_size == 2             # command line beats the run
  assert config.class_names == ('a', 'b')
  assert config.model.rpn_channels == run.model.rpn_channels  # no flag here: the run's


def test_flagfile_training_flags_are_ignored_but_unknown_command_line_flags_fail(
    tmp_path, capsys):
  cfg = _write(tmp_path / 'x.cfg', ['# a training config', '--backbone=tiny',
                                    '--num_steps=100', '--learning_rate=0.01', '--noflip',
                                    '--model_dir=' + str(tmp_path / 'nope')])
  fv = _flag_values()
  config_flags.parse_argv(fv, ['prog', f'--flagfile={cfg}', '--backbone=resnet50'], 'prog')
  assert fv.backbone == 'resnet50' and fv.flip is False
  assert fv.model_dir == str(tmp_path / 'nope')
  with pytest.raises(SystemExit) as exit_info:
    config_flags.parse_argv(_flag_values(), ['prog', '--num_steps=3'], 'prog')
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines[0].startswith('prog: error:') and 'num_steps' in lines[0]


def test_run_folder_of_a_checkpoint_is_its_folder_or_the_parent_of_best(tmp_path):
  (tmp_path / 'best').mkdir()
  (tmp_path / 'best' / 'checkpoint').write_text('model_checkpoint_path: "ckpt-3"\n')
  (tmp_path / 'export').mkdir()
  (tmp_path / 'run_config.json').write_text('{}')
  assert runs.find_run_folder(str(tmp_path / 'ckpt-3')) == str(tmp_path)
  assert runs.find_run_folder(str(tmp_path / 'best')) == str(tmp_path)
  assert runs.find_run_folder(str(tmp_path / 'best' / 'ckpt-3')) == str(tmp_path)
  assert runs.find_run_folder(str(tmp_path / 'export')) is None   # not a checkpoint folder
  assert runs.find_run_folder(str(tmp_path.parent)) is None


# ---------------------------------------------------------------- all-or-nothing output


def test_staged_output_creates_the_folder_in_one_step(tmp_path):
  out = tmp_path / 'a' / 'b' / 'out'
  with staging.StagedOutput(str(out), last='metrics.json') as stage:
    with open(stage.path('metrics.json'), 'w') as f:
      f.write('{}')
    with open(stage.path('pr_curves', 'x.png'), 'wb') as f:
      f.write(b'png')
    assert not out.exists()
    stage.commit()
  assert sorted(os.listdir(out)) == ['metrics.json', 'pr_curves']
  assert os.listdir(tmp_path / 'a' / 'b') == ['out']


def test_staged_output_replaces_its_entries_and_keeps_other_files(tmp_path):
  out = tmp_path / 'out'
  (out / 'pr_curves').mkdir(parents=True)
  (out / 'pr_curves' / 'old_class.png').write_bytes(b'old')
  (out / 'metrics.json').write_text('old')
  (out / 'notes.txt').write_text('mine')
  with staging.StagedOutput(str(out)) as stage:
    with open(stage.path('metrics.json'), 'w') as f:
      f.write('new')
    with open(stage.path('pr_curves', 'new_class.png'), 'wb') as f:
      f.write(b'new')
    stage.commit()
  assert (out / 'metrics.json').read_text() == 'new'
  assert os.listdir(out / 'pr_curves') == ['new_class.png']
  assert (out / 'notes.txt').read_text() == 'mine'
  assert sorted(os.listdir(out)) == ['metrics.json', 'notes.txt', 'pr_curves']
  assert os.listdir(tmp_path) == ['out']


def test_staged_output_writes_nothing_when_an_error_interrupts(tmp_path):
  out = tmp_path / 'out'
  with pytest.raises(RuntimeError):
    with staging.StagedOutput(str(out)) as stage:
      with open(stage.path('detections.json'), 'w') as f:
        f.write('[]')
      raise RuntimeError('plotting failed')
  assert os.listdir(tmp_path) == []
  (tmp_path / 'file').write_text('x')
  with pytest.raises(ValueError, match='not a folder'):
    staging.check_output_dir(str(tmp_path / 'file'))


# ---------------------------------------------------------------- detections files


def _truth(gt, sizes=None):
  sizes = sizes or {k: (100, 100) for k in gt}
  return run_model.SplitTruth(gt, sizes, {}, max((len(e['classes']) for e in gt.values()),
                                                 default=0))


GT = {0: {'boxes': np.array([[10., 10., 50., 60.]]), 'classes': np.array([1]),
          'difficult': np.array([False])},
      1: {'boxes': np.array([[0., 0., 30., 30.], [40., 40., 90., 80.]]),
          'classes': np.array([2, 1]), 'difficult': np.array([False, False])}}
GOOD = {'image_id': 0, 'category_id': 1, 'bbox': [10, 10, 50, 40], 'score': 0.9}


@pytest.mark.parametrize('entry,expected', [
    (dict(GOOD, image_id=7), 'entry 1: unknown image_id 7'),
    (dict(GOOD, category_id=5), 'entry 1: unknown category_id 5'),
    (dict(GOOD, bbox=[1, 2, 3]), 'entry 1: bbox must have 4 numbers'),
    (dict(GOOD, bbox=[1, 2, -3, 4]), 'entry 1: bbox has a negative width or height'),
    (dict(GOOD, bbox=[1, 2, 'x', 4]), 'entry 1: bbox must contain numbers'),
    (dict(GOOD, score=None), 'entry 1: score must be a number'),
    ({'image_id': 0, 'bbox': [1, 2, 3, 4], 'score': 1}, "entry 1: missing key(s) ['category_id']"),
])
def test_bad_detections_name_the_flag_file_entry_and_problem(tmp_path, entry, expected):
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps([GOOD, entry]))
  with pytest.raises(EvaluationError) as info:
    scoring.load_detections(str(path), _truth(GT), [1, 2])
  message = str(info.value)
  assert message.startswith('--detections: ')
  assert str(path) in message and expected in message


def test_detections_file_that_is_not_a_results_list_or_missing(tmp_path):
  path = tmp_path / 'dets.json'
  path.write_text('{"image_id": 0}')
  with pytest.raises(EvaluationError, match='expected a JSON list'):
    scoring.load_detections(str(path), _truth(GT), [1, 2])
  path.write_text('[{"image_id": 0,')
  with pytest.raises(EvaluationError, match='not valid JSON'):
    scoring.load_detections(str(path), _truth(GT), [1, 2])
  with pytest.raises(EvaluationError, match='no such file'):
    scoring.load_detections(str(tmp_path / 'none.json'), _truth(GT), [1, 2])


def test_max_eval_images_drops_detections_of_images_not_evaluated(tmp_path):
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps([GOOD, dict(GOOD, image_id=1), dict(GOOD, image_id=99)]))
  truth = _truth({0: GT[0]})
  results, dets = scoring.load_detections(str(path), truth, [1, 2], restrict_to_truth=True)
  assert [r['image_id'] for r in results] == [0]
  np.testing.assert_array_equal(dets.boxes, [[10, 10, 50, 60]])


def test_metric_names():
  assert scoring.parse_metrics(['voc07', 'COCO', 'voc07']) == ('voc07', 'coco')
  assert scoring.parse_metrics('voc,voc07') == ('voc', 'voc07')
  with pytest.raises(EvaluationError, match="--metric: unknown metric 'map'"):
    scoring.parse_metrics(['map'])
  with pytest.raises(EvaluationError, match='no metric'):
    scoring.parse_metrics([])


def test_perfect_detections_score_one_with_every_metric():
  results = [{'image_id': i, 'category_id': int(c), 'score': 0.5 + 0.1 * k,
              'bbox': [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]}
             for i, e in GT.items() for k, (b, c) in enumerate(zip(e['boxes'], e['classes']))]
  from faster_rcnn_tf.evaluation import detections_io
  dets = detections_io.coco_results_to_detections(results, [1, 2])
  scores = scoring.score(('voc07', 'voc', 'coco'), _truth(GT), dets, results, ['a', 'b'],
                         [1, 2])
  assert scores.voc['voc07']['map'] == 1.0 and scores.voc['voc']['map'] == 1.0
  assert scores.coco['stats']['AP'] == pytest.approx(1.0)
  assert scores.coco['ground_truth'] == 'records'


# ---------------------------------------------------------------- VOC folder ids


def _voc_folder(root, stems, boxes_by_stem):
  for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
    os.makedirs(root / sub, exist_ok=True)
  for stem in stems:
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(root / 'JPEGImages' / f'{stem}.png')
    objects = ''.join(
        f'<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>'
        f'<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>'
        for name, (x0, y0, x1, y1) in boxes_by_stem[stem])
    (root / 'Annotations' / f'{stem}.xml').write_text(
        f'<annotation><size><width>80</width><height>60</height></size>{objects}</annotation>')


def test_voc_ids_are_split_file_line_indices_and_class_list_positions(tmp_path):
  """The documented id rules: image_id = 0-based line of ImageSets/Main/<split>.txt
  (blank lines not counted), category_id = 1-based index in the sorted class names."""
  from faster_rcnn_tf.data import registry
  boxes = {'b_img': [('zebra', (11, 21, 40, 50))],    # VOC 1-based inclusive corners
           'a_img': [('ant', (1, 1, 20, 10)), ('zebra', (31, 11, 70, 50))]}
  _voc_folder(tmp_path, list(boxes), boxes)
  (tmp_path / 'ImageSets' / 'Main' / 'test.txt').write_text('b_img\n\na_img\n')
  source = registry.get_source(f'voc:{tmp_path}', 'test')
  assert source.class_names == ['ant', 'zebra'] and source.category_ids == [1, 2]
  truth = run_model.collect_ground_truth(source)
  assert list(truth.gt) == [0, 1]
  # b_img is image 0; VOC (xmin 11, ymin 21, xmax 40, ymax 50) is bbox [10, 20, 30, 30].
  results = [{'image_id': 0, 'category_id': 2, 'bbox': [10, 20, 30, 30], 'score': 0.9},
             {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 20, 10], 'score': 0.8},
             {'image_id': 1, 'category_id': 2, 'bbox': [30, 10, 40, 40], 'score': 0.7}]
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps(results))
  results, dets = scoring.load_detections(str(path), truth, source.category_ids)
  scores = scoring.score(('voc07', 'coco'), truth, dets, results, source.class_names,
                         source.category_ids)
  assert scores.voc['voc07']['map'] == 1.0
  assert scores.coco['stats']['AP'] == pytest.approx(1.0)
  path.write_text(json.dumps(results + [dict(results[0], image_id=2)]))
  with pytest.raises(EvaluationError, match='unknown image_id 2'):
    scoring.load_detections(str(path), truth, source.category_ids)


# ---------------------------------------------------------------- the SavedModel contract


class _FakeExport:
  """Answers like export.py's detect_images: the ground truth, normalized, padded to M=5."""
  path = 'fake_export'

  def __init__(self, gt_by_size):
    self.gt_by_size = gt_by_size
    self.calls = []

  def __call__(self, images):
    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.ndim == 4
    h, w = images.shape[1:3]
    self.calls.append(images.shape)
    boxes = np.zeros((len(images), 5, 4), np.float32)
    classes = np.zeros((len(images), 5), np.int32)
    num = np.zeros(len(images), np.int32)
    for b, image in enumerate(images):
      gt_boxes, gt_classes = self.gt_by_size[int(image[0, 0, 0])]
      n = len(gt_classes)
      boxes[b, :n] = np.asarray(gt_boxes) / [h, w, h, w]
      classes[b, :n] = gt_classes
      num[b] = n
    return {'detection_boxes': boxes, 'detection_scores': np.full((len(images), 5), 0.9),
            'detection_classes': classes, 'num_detections': num}


def test_saved_model_outputs_are_mapped_to_original_pixels_in_same_size_batches():
  from faster_rcnn_tf.data.source import InMemorySource
  records, answers = [], {}
  for i, (h, w) in enumerate([(40, 60), (40, 60), (40, 60), (30, 20), (40, 60)]):
    boxes = [[2.0 + i, 4.0, 20.0, 18.0]]
    records.append({'image': np.full((h, w, 3), i, np.uint8), 'boxes': boxes,
                    'classes': [1 + i % 2], 'image_id': 10 + i})
    answers[i] = (boxes, [1 + i % 2])
  source = InMemorySource(records, ['a', 'b'], split='test')
  fake = _FakeExport(answers)
  run = saved_model_runner.run_saved_model(fake, source, batch_size=2, keep_images=1,
                                           show_progress=False)
  assert fake.calls == [(2, 40, 60, 3), (1, 40, 60, 3), (1, 30, 20, 3), (1, 40, 60, 3)]
  assert list(run.truth.gt) == [10, 11, 12, 13, 14] and list(run.truth.images) == [10]
  np.testing.assert_allclose(run.detections.boxes,
                             [answers[i][0][0] for i in range(5)], atol=1e-4)
  assert [r['category_id'] for r in run.results] == [1, 2, 1, 2, 1]
  voc = run_model.score_voc(run.truth.gt, run.detections, 2, ('voc07',))['voc07']
  assert voc['map'] == 1.0
  bad = InMemorySource(records[:1], ['a'], split='test')
  fake.gt_by_size = {0: ([[0, 0, 5, 5]], [2])}
  with pytest.raises(EvaluationError, match='returns class id 2, but the dataset has 1'):
    saved_model_runner.run_saved_model(fake, bad, batch_size=2, show_progress=False)


# ---------------------------------------------------------------- pictures


def test_sample_pictures_draw_ground_truth_and_confident_predictions():
  import io as io_lib
  from faster_rcnn_tf.evaluation import common
  from faster_rcnn_tf.evaluation import samples
  image = np.full((100, 100, 3), 90, np.uint8)
  truth = run_model.SplitTruth(dict(GT), {0: (100, 100), 1: (100, 100)},
                               {0: image, 1: image}, 2)
  dets = common.as_detections([(0, 1, 0.9, [12, 12, 48, 58]), (0, 2, 0.2, [60, 60, 90, 90])])
  pictures = samples.render_samples(truth, dets, ['a', 'b'], score_threshold=0.5)
  assert list(pictures) == ['sample_00_image_0.png', 'sample_01_image_1.png']
  with Image.open(io_lib.BytesIO(pictures['sample_00_image_0.png'])) as im:
    drawn = np.asarray(im)
  assert drawn.shape == (400, 808, 3)      # two panels, enlarged 4x
  # The white ground-truth outline of box [10, 10, 50, 60] enlarged 4x: a 2-pixel frame on
  # rows 40..199 and columns 40..239 of the left panel (its label sits above it, from
  # column 40), nothing white inside it or elsewhere in the panel (the white gap between
  # the panels is columns 400..407, outside what is checked here).
  white = np.all(drawn[:, :400] == 255, axis=2)
  assert white[40:200, 40:42].all() and white[40:200, 238:240].all()   # left, right sides
  assert white[40:42, 40:240].all() and white[198:200, 40:240].all()   # top, bottom
  assert not white[42:198, 42:238].any()                               # inside
  assert not white[:, :40].any() and not white[200:].any() and not white[:, 240:].any()
  assert white[:40, 40:].any()                                         # the 'GT: a' label
  assert np.all(drawn[:, 400:408] == 255)                              # the gap
  low = samples.render_samples(truth, dets, ['a', 'b'], score_threshold=0.1)
  assert low['sample_00_image_0.png'] != pictures['sample_00_image_0.png']
  assert low['sample_01_image_1.png'] == pictures['sample_01_image_1.png']
