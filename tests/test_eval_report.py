"""Reports: metrics.json content, per-class table, precision-recall PNGs."""

import json
import math
import os

import numpy as np
import pytest

from faster_rcnn_tf.evaluation import coco_metrics, report, voc_metrics

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
CLASS_NAMES = ['cat', 'dog', 'potted plant']
GT = {
    1: {'boxes': [[0, 0, 10, 10], [20, 20, 30, 30]], 'classes': [1, 1], 'difficult': [0, 1]},
    2: {'boxes': [[0, 0, 10, 10], [5, 5, 105, 115]], 'classes': [1, 2]},
}
DETS = [(1, 1, 0.9, [0, 0, 10, 10]), (1, 1, 0.8, [0, 0, 10, 10]), (2, 1, 0.6, [50, 50, 60, 60]),
        (2, 1, 0.5, [0, 0, 10, 20]), (1, 3, 0.95, [0, 0, 5, 5])]


def _results():
  voc07 = voc_metrics.evaluate_voc(GT, DETS, 3, use_07_metric=True)
  voc = voc_metrics.evaluate_voc(GT, DETS, 3)
  coco = coco_metrics.evaluate_coco(GT, DETS, CLASS_NAMES)
  return voc07, voc, coco


def _strict_json(path):
  def no_constants(name):
    raise AssertionError(f'non-standard JSON constant {name}')
  with open(path) as f:
    return json.load(f, parse_constant=no_constants)


def _assert_png(path):
  with open(path, 'rb') as f:
    data = f.read()
  assert data.startswith(PNG_SIGNATURE)
  assert data[12:16] == b'IHDR' and data.rstrip().endswith(b'IEND\xaeB`\x82')
  from PIL import Image
  with Image.open(path) as im:
    im.verify()
  with Image.open(path) as im:
    assert im.format == 'PNG' and im.size[0] > 100 and im.size[1] > 100


def test_write_report(tmp_path):
  voc07, voc, coco = _results()
  out = report.write_report(str(tmp_path), CLASS_NAMES, split='test', checkpoint_step=1200,
                            voc_results=[voc07, voc], coco_result=coco)
  content = _strict_json(tmp_path / 'metrics.json')
  assert out['metrics_path'] == str(tmp_path / 'metrics.json')
  assert content['split'] == 'test' and content['checkpoint_step'] == 1200
  m = content['metrics']
  assert m['voc07/mAP'] == pytest.approx(8.5 / 11 / 2)
  assert m['voc/mAP'] == pytest.approx(0.375)
  assert [k for k in m if k.startswith('coco/')] == [
      f'coco/{n}' for n in coco_metrics.STAT_NAMES]
  for n in coco_metrics.STAT_NAMES:
    assert m[f'coco/{n}'] == pytest.approx(coco['stats'][n])
  per_class = content['per_class']
  assert [r['name'] for r in per_class] == CLASS_NAMES
  assert [r['class_id'] for r in per_class] == [1, 2, 3]
  cat, dog, plant = per_class
  assert cat['num_gt'] == 2 and cat['num_det'] == 4
  assert cat['voc/AP'] == pytest.approx(0.75) and cat['voc07/AP'] == pytest.approx(8.5 / 11)
  assert cat['coco/AP'] == pytest.approx(coco['per_class']['AP'][0])
  assert dog['voc/AP'] == 0.0 and dog['num_det'] == 0
  assert plant['voc/AP'] is None and plant['coco/AP50'] is None  # NaN -> null
  assert 'Average Precision' in content['coco_summary']

  # One PR curve per class with ground truth (dog: no detections, still plotted).
  pngs = sorted(os.listdir(tmp_path / 'pr_curves'))
  assert pngs == ['pr_001_cat.png', 'pr_002_dog.png']
  assert out['pr_curve_paths'] == [str(tmp_path / 'pr_curves' / p) for p in pngs]
  for p in out['pr_curve_paths']:
    _assert_png(p)

  table = out['table']
  lines = table.splitlines()
  assert lines[0].split() == ['class', '#gt', '#det', 'voc07/AP', 'voc/AP', 'coco/AP',
                              'coco/AP50', 'coco/AP75']
  assert lines[2].split()[:5] == ['cat', '2', '4', '0.7727', '0.7500']
  assert lines[4].startswith('potted plant') and lines[4].split()[4] == '-'
  assert lines[-1].split()[:5] == ['mean', '3', '5', f'{8.5 / 22:.4f}', '0.3750']


def test_metrics_json_is_replaced_atomically(tmp_path):
  path = tmp_path / 'metrics.json'
  report.write_metrics_json(str(path), {'voc/mAP': 0.1}, split='val', checkpoint_step=1)
  content = report.write_metrics_json(
      str(path), {'voc/mAP': np.float32(0.5), 'x': math.nan}, [{'name': 'a', 'ap': np.nan}],
      split='val', checkpoint_step=np.int64(2), extra={'checkpoint': 'ckpt-2'})
  assert _strict_json(path) == content == {
      'split': 'val', 'checkpoint_step': 2, 'metrics': {'voc/mAP': 0.5, 'x': None},
      'per_class': [{'name': 'a', 'ap': None}], 'checkpoint': 'ckpt-2'}
  assert os.listdir(tmp_path) == ['metrics.json']
  with pytest.raises(ValueError, match="extra key 'split'"):
    report.write_metrics_json(str(path), {}, split='val', checkpoint_step=3,
                              extra={'split': 'x'})
  assert _strict_json(path)['checkpoint_step'] == 2


def test_plot_pr_curves_skips_classes_without_ground_truth(tmp_path):
  _, voc, _ = _results()
  paths = report.plot_pr_curves(str(tmp_path / 'curves'), CLASS_NAMES, voc['precision'],
                                voc['recall'])
  assert [os.path.basename(p) for p in paths] == ['pr_001_cat.png', 'pr_002_dog.png']
  for p in paths:
    _assert_png(p)


def test_collect_metrics_coco_only():
  _, _, coco = _results()
  metrics, per_class = report.collect_metrics(CLASS_NAMES, coco_result=coco)
  assert set(metrics) == {f'coco/{n}' for n in coco_metrics.STAT_NAMES}
  assert per_class[0]['num_gt'] == 3  # COCO counts the difficult (crowd) object too
  assert math.isnan(per_class[2]['coco/AP'])
