"""bench/bench_learning.py's pieces that need no training: the torchvision arm's schedule
against ours (hand-computed points and the TF schedule the trainer uses), the schedule
scaling, the detections it hands to evaluate.py, and its one-line refusals. The arms
themselves train for minutes and run as the benchmark (bench/README.md)."""

import os

import numpy as np
import pytest

from bench import bench_learning
from tests import run_helpers
from tests.test_bench_scripts import _bench


def test_learning_rate_matches_hand_computed_points():
  # base 1e-3, warm-up 100 steps from 0.1x, decays x0.1 at 300 and 400.
  lr = lambda step: bench_learning.learning_rate(step, 1e-3, [300, 400], 0.1, 100)
  assert lr(0) == pytest.approx(1e-4)
  assert lr(50) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
  assert lr(100) == pytest.approx(1e-3)
  assert lr(299) == pytest.approx(1e-3)
  assert lr(300) == pytest.approx(1e-4)
  assert lr(400) == pytest.approx(1e-5)


def test_learning_rate_equals_the_trainers_schedule():
  from faster_rcnn_tf.training import optimizer
  schedule = optimizer.StepDecayWithWarmup(2e-3, (150, 180), 0.1, 40)
  for step in (0, 1, 17, 39, 40, 41, 149, 150, 179, 180, 500):
    assert bench_learning.learning_rate(step, 2e-3, [150, 180], 0.1, 40) == pytest.approx(
        float(schedule(step)), rel=1e-6), step


def test_scaled_steps_keep_zero_and_at_least_one():
  assert bench_learning.scaled_steps([200, 1900], 2400, 600) == [50, 475]
  assert bench_learning.scaled_steps([0, 3], 2400, 60) == [0, 1]


def test_schedule_step_stretches_the_schedule_over_the_time():
  # 400 steps over 300 s: a quarter of the time is step 100, the end is the last step.
  assert bench_learning.schedule_step(75.0, 300.0, 400) == 100
  assert bench_learning.schedule_step(0.0, 300.0, 400) == 0
  assert bench_learning.schedule_step(299.9, 300.0, 400) == 399
  assert bench_learning.schedule_step(400.0, 300.0, 400) == 400
  assert bench_learning.schedule_step(5.0, 0.0, 400) == 400


def test_coco_results_are_xywh_with_the_datasets_category_ids():
  out = bench_learning.coco_results(7, np.array([[10., 20., 40., 25.]]), np.array([0.5]),
                                    np.array([2]), [11, 12, 13])
  assert out == [{'image_id': 7, 'category_id': 12, 'bbox': [10.0, 20.0, 30.0, 5.0],
                  'score': 0.5}]


def test_comparison_goals():
  rec = bench_learning.comparison('d', {'ours': {'map50_voc07': 0.5},
                                        'tv_time': {'map50_voc07': 0.4},
                                        'tv_steps': {'map50_voc07': 0.53}})
  assert rec['ours_minus_tv_same_time'] == pytest.approx(0.1)
  assert rec['ours_minus_tv_same_steps'] == pytest.approx(-0.03)
  assert rec['goal_same_time_met'] is True and rec['goal_same_steps_met'] is False


def test_without_torch_the_torchvision_arms_refuse_in_one_line(tmp_path):
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text(
      "raise ImportError('No module named torch')\n")
  result = _bench('bench_learning.py', '--dataset=shapes', f'--work_dir={tmp_path}/w',
                  env={'PYTHONPATH': f'{tmp_path}{os.pathsep}{run_helpers.ROOT}'})
  assert result.returncode == 2 and result.stdout == ''
  err = result.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('bench_learning.py: error: the torchvision '
                                             'arms need torch and torchvision'), result.stderr


@pytest.mark.parametrize('arms, message', [
    ('ours,tv_weekly', "--arms: unknown ['tv_weekly']; choose from ours,tv_steps,tv_time"),
    ('tv_time', "--arms: tv_time needs ours (it trains for ours' wall time) or --time_limit"),
])
def test_bad_arms_are_one_line(tmp_path, arms, message):
  result = _bench('bench_learning.py', '--dataset=shapes', f'--arms={arms}',
                  f'--work_dir={tmp_path}/w')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == f'bench_learning.py: error: {message}'
