"""train.py with multi-scale training, augmentation and anchors fitted to the data
(--anchor_scales=auto): the run trains, evaluates at one size and records the chosen
anchors in its run_config.json (and flags.cfg); inspect reports the anchor recall."""

import json
import os
import re
import subprocess
import sys

from tests import run_helpers


def _flags(path):
  values = {}
  with open(path) as f:
    for line in f:
      name, _, value = line.strip().lstrip('-').partition('=')
      values[name] = value
  return values


def test_multi_scale_augmented_auto_anchor_run(tmp_path):
  model_dir = tmp_path / 'run'
  result = run_helpers.train_tiny(
      model_dir, '--num_steps=4', '--min_size=48,56,64', '--brightness=0.1',
      '--contrast=0.2', '--saturation=0.2', '--hue=0.05', '--scale_jitter=0.8,1.25',
      '--anchor_scales=auto', '--anchor_ratios=auto:2', '--max_eval_images=4')
  match = re.search(r'Anchors fitted to train \(\d+ s\): scales (\S+) ratios (\S+); recall',
                    result.stdout)
  assert match, result.stdout
  values = _flags(model_dir / 'flags.cfg')
  assert values['min_size'] == '48,56,64' and values['test_min_size'] == '0'
  assert values['scale_jitter'] == '0.8,1.25'
  assert values['anchor_scales'] == match.group(1)
  assert values['anchor_ratios'] == match.group(2)
  assert len(values['anchor_scales'].split(',')) == 3
  assert len(values['anchor_ratios'].split(',')) == 2
  assert all(float(v) > 0 for v in values['anchor_scales'].split(','))
  assert 'VOC07 mAP@0.5 on shapes test' in result.stdout
  with open(model_dir / 'run_config.json') as f:
    saved = json.load(f)
  assert saved['model']['anchor_scales'] == [float(v) for v in match.group(1).split(',')]
  assert saved['model']['anchor_ratios'] == [float(v) for v in match.group(2).split(',')]
  assert saved['data']['min_size'] == [48, 56, 64] and saved['data']['test_min_size'] == 0
  assert saved['data']['scale_jitter'] == [0.8, 1.25]
  assert (saved['data']['brightness'], saved['data']['hue']) == (0.1, 0.05)
  # evaluate.py rebuilds the model from the run's run_config.json (numeric anchors) at
  # one size.
  ev = run_helpers.run_script('evaluate.py', f'--model_dir={model_dir}', '--metric=voc07',
                              '--max_eval_images=4', f'--output_dir={tmp_path / "eval"}')
  assert ev.returncode == 0, ev.stderr


def test_inspect_reports_configured_and_auto_anchor_recall():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=run_helpers.ROOT)
  result = subprocess.run(
      [sys.executable, '-m', 'faster_rcnn_tf.data.inspect',
       f'--flagfile={run_helpers.TINY_CFG}', '--dataset=shapes:train_images=12',
       '--output_dir=', '--anchor_base_size=16'],
      cwd=run_helpers.ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  anchors = json.loads(result.stdout.strip().splitlines()[-1])['anchors']
  assert anchors['min_sizes'] == [64] and anchors['stride'] == 16
  assert anchors['configured']['anchor_scales'] == [1.0, 2.0, 4.0]  # tiny_run.cfg's
  assert anchors['boxes']['boxes'] > 0
  for measure in ('recall_centred', 'recall_grid'):
    for t in ('0.5', '0.7'):
      assert anchors['auto'][measure][t] >= anchors['configured'][measure][t]
