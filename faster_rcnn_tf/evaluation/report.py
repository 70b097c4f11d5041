"""Evaluation reports: per-class table, metrics.json, precision-recall curve PNGs.

numpy + matplotlib (Agg canvas, no pyplot state, no GUI backend); no TensorFlow.

Metric names used in tables and metrics.json:
  '<voc metric>/mAP' and per class '<voc metric>/AP', where <voc metric> is the key
  given to `collect_metrics` (by default the result's own 'metric': 'voc07' or 'voc');
  'coco/<stat>' for the 12 COCO stats (coco_metrics.STAT_NAMES) and per class
  'coco/AP', 'coco/AP50', 'coco/AP75'.
NaN (undefined, e.g. a class without ground truth) is written to JSON as null and shown
as '-' in tables.
"""

import json
import math
import os
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from faster_rcnn_tf import fileio

METRICS_FILENAME = 'metrics.json'
PR_CURVES_DIRNAME = 'pr_curves'


def _as_voc_dict(voc_results) -> dict:
  if voc_results is None:
    return {}
  if isinstance(voc_results, Mapping):
    if 'ap' in voc_results:  # a single evaluate_voc result
      return {voc_results['metric']: voc_results}
    return dict(voc_results)
  return {r['metric']: r for r in voc_results}


def collect_metrics(class_names: Sequence[str], voc_results=None,
                    coco_result: Optional[Mapping[str, Any]] = None):
  """Flattens evaluation results into (metrics, per_class).

  Args:
    class_names: K names.
    voc_results: an `evaluate_voc` result, a list of them (keyed by their 'metric'),
      or a mapping name -> result.
    coco_result: an `evaluate_coco` / `run_coco_eval` result.
  Returns:
    metrics: {metric name: float}.
    per_class: list of K dicts {'class_id': k, 'name', 'num_gt', 'num_det',
      '<metric>/AP': float, ...}. num_gt / num_det come from the first VOC result
      (non-difficult objects) or else from the COCO result (all objects).
  """
  voc = _as_voc_dict(voc_results)
  k = len(class_names)
  metrics = {}
  counts_from = next(iter(voc.values()), None)
  if counts_from is None and coco_result is not None and 'num_gt' in coco_result:
    counts_from = coco_result
  per_class = []
  for i, n in enumerate(class_names):
    row = {'class_id': i + 1, 'name': str(n)}
    if counts_from is not None:
      row['num_gt'] = int(counts_from['num_gt'][i])
      row['num_det'] = int(counts_from['num_det'][i])
    per_class.append(row)
  for name, r in voc.items():
    ap = np.asarray(r['ap'], np.float64)
    if ap.shape != (k,):
      raise ValueError(f'{name}: {ap.shape[0]} APs for {k} class names')
    metrics[f'{name}/mAP'] = float(r['map'])
    for i in range(k):
      per_class[i][f'{name}/AP'] = float(ap[i])
  if coco_result is not None:
    for stat, value in coco_result['stats'].items():
      metrics[f'coco/{stat}'] = float(value)
    for stat, values in coco_result['per_class'].items():
      values = np.asarray(values, np.float64)
      if values.shape != (k,):
        raise ValueError(f'coco {stat}: {values.shape[0]} values for {k} class names')
      for i in range(k):
        per_class[i][f'coco/{stat}'] = float(values[i])
  return metrics, per_class


def _fmt(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '-'
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  return f'{float(value):.4f}'


def format_class_table(per_class: Sequence[Mapping[str, Any]],
                       metrics: Optional[Mapping[str, float]] = None) -> str:
  """A fixed-width console table: class name, #gt, #det, then one column per AP metric.

  Args:
    per_class: `collect_metrics`' per_class list.
    metrics: optional; its '<metric>/mAP' and 'coco/<stat>' values fill a final 'mean'
      row under the matching per-class columns.
  """
  columns = []
  for row in per_class:
    for key in row:
      if key not in ('class_id', 'name', 'num_gt', 'num_det') and key not in columns:
        columns.append(key)
  header = ['class', '#gt', '#det'] + columns
  rows = [[str(r['name']), _fmt(r.get('num_gt')), _fmt(r.get('num_det'))]
          + [_fmt(r.get(c)) for c in columns] for r in per_class]
  if metrics is not None:
    mean = ['mean', _fmt(sum(r.get('num_gt', 0) for r in per_class)),
            _fmt(sum(r.get('num_det', 0) for r in per_class))]
    for c in columns:
      prefix, _, stat = c.partition('/')
      key = f'{prefix}/mAP' if stat == 'AP' and f'{prefix}/mAP' in metrics else c
      mean.append(_fmt(metrics.get(key)))
    rows.append(mean)
  widths = [max(len(header[j]), *(len(r[j]) for r in rows)) if rows else len(header[j])
            for j in range(len(header))]

  def line(cells):
    return '  '.join(c.ljust(w) if j == 0 else c.rjust(w)
                     for j, (c, w) in enumerate(zip(cells, widths)))

  out = [line(header), '  '.join('-' * w for w in widths)]
  out += [line(r) for r in rows[:len(per_class)]]
  if metrics is not None:
    out += ['  '.join('-' * w for w in widths), line(rows[-1])]
  return '\n'.join(out)


def _jsonable(value):
  """numpy -> Python, NaN/inf -> None, recursively."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return [_jsonable(v) for v in value.tolist()]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def write_metrics_json(path: str, metrics: Mapping[str, float],
                       per_class: Optional[Sequence[Mapping[str, Any]]] = None, *,
                       split: str, checkpoint_step: Optional[int],
                       extra: Optional[Mapping[str, Any]] = None) -> dict:
  """Writes metrics.json atomically (temporary file + os.replace) and returns its content.

  Content: {'split', 'checkpoint_step', 'metrics': {name: value}, 'per_class': [...],
  plus the keys of `extra`}. NaN / inf become null.
  """
  content = {'split': split,
             'checkpoint_step': None if checkpoint_step is None else int(checkpoint_step),
             'metrics': _jsonable(dict(metrics)),
             'per_class': _jsonable(list(per_class or []))}
  for key, value in (extra or {}).items():
    if key in content:
      raise ValueError(f'extra key {key!r} would overwrite a metrics.json field')
    content[key] = _jsonable(value)
  fileio.atomic_write_text(path, json.dumps(content, indent=2, allow_nan=False) + '\n')
  return content


def _safe_name(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name)).strip('_') or 'class'


def plot_pr_curves(out_dir: str, class_names: Sequence[str], precision: Sequence[np.ndarray],
                   recall: Sequence[np.ndarray],
                   ap: Optional[Mapping[str, Sequence[float]]] = None,
                   dpi: int = 80) -> list:
  """One precision-recall PNG per class with ground truth, named pr_<kkk>_<name>.png.

  Args:
    out_dir: created if missing.
    class_names: K names.
    precision, recall: K ranked curves (`evaluate_voc`'s 'precision' / 'recall').
      Classes whose recall is NaN (no non-difficult ground truth) are skipped.
    ap: optional {metric name: [K] AP}, shown in the titles.
    dpi: resolution (the figure is 4 x 4 inches).
  Returns:
    The written paths, in class order. Each figure shows the raw curve and the
    monotone precision envelope that the 'voc' AP integrates.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for k, name in enumerate(class_names):
    rec = np.asarray(recall[k], np.float64)
    prec = np.asarray(precision[k], np.float64)
    if np.isnan(rec).any():
      continue
    fig = Figure(figsize=(4, 4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.add_subplot(1, 1, 1)
    if rec.size:
      axes.plot(rec, prec, color='tab:blue', linewidth=1, label='precision')
      mrec = np.concatenate([[0.0], rec, [1.0]])
      mpre = np.maximum.accumulate(np.concatenate([[0.0], prec, [0.0]])[::-1])[::-1]
      axes.step(mrec, mpre, where='pre', color='tab:orange', linewidth=1,
                linestyle='--', label='envelope')
      axes.legend(loc='lower left', fontsize=7)
    else:
      axes.text(0.5, 0.5, 'no detections', ha='center', va='center')
    title = str(name)
    if ap is not None:
      title += '\n' + ', '.join(f'{m} AP={_fmt(float(v[k]))}' for m, v in ap.items())
    axes.set_title(title, fontsize=9)
    axes.set_xlabel('recall')
    axes.set_ylabel('precision')
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.grid(True, linewidth=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, f'pr_{k + 1:03d}_{_safe_name(name)}.png')
    fig.savefig(path, format='png')
    paths.append(path)
  return paths


def write_report(out_dir: str, class_names: Sequence[str], *, split: str,
                 checkpoint_step: Optional[int], voc_results=None,
                 coco_result: Optional[Mapping[str, Any]] = None, pr_curves: bool = True,
                 extra: Optional[Mapping[str, Any]] = None) -> dict:
  """Writes <out_dir>/metrics.json and <out_dir>/pr_curves/*.png; returns a summary.

  Returns {'table': the per-class table text, 'metrics', 'per_class',
  'metrics_path', 'pr_curve_paths'}. PR curves come from the first VOC result (the
  curve is the same for every VOC AP variant); none without VOC results. The COCO
  summary text, if any, is stored in metrics.json under 'coco_summary'.
  """
  voc = _as_voc_dict(voc_results)
  metrics, per_class = collect_metrics(class_names, voc, coco_result)
  extra = dict(extra or {})
  if coco_result is not None and 'summary' in coco_result:
    extra.setdefault('coco_summary', coco_result['summary'])
  metrics_path = os.path.join(out_dir, METRICS_FILENAME)
  write_metrics_json(metrics_path, metrics, per_class, split=split,
                     checkpoint_step=checkpoint_step, extra=extra)
  paths = []
  if pr_curves and voc:
    first = next(iter(voc.values()))
    paths = plot_pr_curves(os.path.join(out_dir, PR_CURVES_DIRNAME), class_names,
                           first['precision'], first['recall'],
                           ap={name: r['ap'] for name, r in voc.items()})
  return {'table': format_class_table(per_class, metrics), 'metrics': metrics,
          'per_class': per_class, 'metrics_path': metrics_path, 'pr_curve_paths': paths}
