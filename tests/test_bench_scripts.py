"""Every bench script run at toy sizes (the rest of tests/test_bench_smoke.py's job): each
one's JSON fields, and the exit status: non-zero with one line when nothing could be
measured, when every measurement failed, or on bad input. Numbers are not checked, only
fields and the relations between them that hold whatever the machine's speed.

The TensorFlow scripts run in this process (`run(args)`, or `common.script_main` for the
exit status); the ones that start train.py, parse absl flags or need torch run as
subprocesses, one each.
"""

import json
import os
import subprocess
import sys

import pytest

from bench import bench_eval_speed
from bench import bench_roofline
from bench import bench_scaling
from bench import bench_stages
from bench import bench_train_step
from bench import common
from bench import compare_torchvision
from tests import run_helpers

TOY = ['--threads=2', '--repeats=1', '--warmup=1', '--matmul_size=64', '--matmul_repeats=1',
       '--bandwidth_mb=0', '--num_classes=3']
TIMING_FIELDS = ('sec_per_image_median', 'sec_per_image_min', 'sec_per_image_max',
                 'images_per_s', 'first_call_s')


def _lines(capsys):
  return [json.loads(line) for line in capsys.readouterr().out.splitlines()
          if line.startswith('{')]


def _check_timing(rec):
  for field in TIMING_FIELDS:
    assert rec.get(field) is not None, (field, rec)
  assert rec['sec_per_image_min'] <= rec['sec_per_image_median'] <= rec['sec_per_image_max']


@pytest.fixture
def thread_env(monkeypatch):
  """script_main writes the thread variables into os.environ: restore them after."""
  for name in common.THREAD_ENV_VARS:
    monkeypatch.setenv(name, os.environ.get(name, '2'))


# ---------------------------------------------------------------- exit status


def test_exit_status_counts_measurements_not_the_roofline_or_fits(capsys):
  roof = {'mode': 'matmul_roofline', 'matmul_gflops': 1.0}
  good, bad = {'mode': 'x', 'sec_per_image_median': 0.1}, {'mode': 'x', 'error': 'E: boom'}
  assert common.exit_status([roof, good, bad], 'b.py') == 0
  assert common.exit_status([roof, {'fit': True, 'mode': 'x'}, bad, bad], 'b.py') == 1
  assert capsys.readouterr().err == 'b.py: error: all 2 measurements failed; the first: E: boom\n'
  assert common.exit_status([roof], 'b.py') == 1
  assert capsys.readouterr().err == 'b.py: error: no measurement was made\n'


def test_a_bench_whose_every_measurement_fails_exits_1(monkeypatch, capsys, thread_env):
  """bench_train_step keeps going after a failed measurement (an 'error' line); when all
  of them failed, script_main exits 1 with one line saying so."""
  del thread_env
  real_time_fn = common.time_fn
  calls = []

  def failing_steps(fn, warmup, repeats):
    calls.append(fn)
    if len(calls) <= 2:  # the roofline's matmuls (numpy, TensorFlow) run as usual
      return real_time_fn(fn, warmup, repeats)
    raise RuntimeError('device lost')

  monkeypatch.setattr(common, 'time_fn', failing_steps)
  with pytest.raises(SystemExit) as exit_info:
    common.script_main(bench_train_step.build_parser, bench_train_step.run, TOY + [
        '--backbones=tiny', '--sizes=64x64', '--batches=1,2'])
  assert exit_info.value.code == 1
  captured = capsys.readouterr()
  errors = [json.loads(l) for l in captured.out.splitlines() if l.startswith('{')][1:]
  assert [r['batch'] for r in errors] == [1, 2]
  assert all(r['error'] == 'RuntimeError: device lost' for r in errors)
  assert captured.err.strip().splitlines()[-1].endswith(
      'error: all 2 measurements failed; the first: RuntimeError: device lost')


def test_bad_flag_value_is_one_line_and_status_2(capsys, thread_env):
  del thread_env
  with pytest.raises(SystemExit) as exit_info:
    common.script_main(bench_scaling.build_parser, bench_scaling.run,
                       TOY + ['--backbones=tiny', '--sweeps=size,width'])
  assert exit_info.value.code == 2
  # (In this process TensorFlow is already loaded: a NOTE line says so before.)
  err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith('NOTE')]
  assert len(err) == 1 and err[0].endswith("error: --sweeps: unknown sweep 'width'; choose "
                                           "from ('size', 'proposals', 'batch')"), err


# ---------------------------------------------------------------- in-process scripts


def test_train_step_bench_tiny(capsys):
  records = bench_train_step.run(bench_train_step.build_parser().parse_args(
      TOY + ['--backbones=tiny', '--sizes=64x64', '--batches=1']))
  assert _lines(capsys) == records
  roof, rec = records
  assert roof['mode'] == 'matmul_roofline' and roof['matmul_gflops'] > 0
  assert (rec['bench'], rec['backbone'], rec['mode'], rec['height'], rec['batch']) == (
      'train_step', 'tiny', 'train_step', 64, 1)
  _check_timing(rec)
  assert rec['sec_per_step_median'] == rec['sec_per_batch_median']
  assert rec['gflop_per_image'] > rec['gflop_forward_per_image'] > 0  # + the backward
  assert set(rec['gflop_parts']) >= {'backbone', 'rpn', 'roi_head'}
  assert isinstance(rec['total_loss_last'], float) and rec['total_loss_last'] > 0
  assert common.exit_status(records) == 0


def test_stages_bench_tiny(capsys):
  records = bench_stages.run(bench_stages.build_parser().parse_args(
      TOY + ['--backbones=tiny', '--sizes=64x64', '--num_rois=16']))
  assert _lines(capsys) == records
  stages = records[1:]
  assert [r['stage'] for r in stages] == list(bench_stages.STAGES) + ['total']
  for rec in stages:
    _check_timing(rec)
    assert (rec['backbone'], rec['height'], rec['width'], rec['num_rois']) == (
        'tiny', 64, 64, 16)
  shares = sum(r['share_of_stage_sum'] for r in stages[:-1])
  assert shares == pytest.approx(1.0, abs=1e-3)
  assert stages[-1]['stage_sum_sec_per_image'] == pytest.approx(
      sum(r['sec_per_image_median'] for r in stages[:-1]), rel=1e-3)
  by_stage = {r['stage']: r for r in stages}
  for name in ('backbone', 'rpn_head', 'roi_head'):
    assert by_stage[name]['gflop_per_image'] > 0


def test_scaling_bench_tiny(capsys):
  records = bench_scaling.run(bench_scaling.build_parser().parse_args(
      TOY + ['--backbones=tiny', '--sizes=64x64,64x128', '--proposals=8,16',
             '--scaling_batches=1,2', '--base_size=64x64']))
  assert _lines(capsys) == records
  points = [r for r in records[1:] if not r.get('fit')]
  fits = {r['sweep']: r for r in records if r.get('fit')}
  assert [(r['sweep'], r['x']) for r in points] == [
      ('size', '64x64'), ('size', '64x128'), ('proposals', 8), ('proposals', 16),
      ('batch', 1), ('batch', 2)]
  for rec in points:
    _check_timing(rec)
  assert sorted(fits) == ['batch', 'proposals', 'size']
  assert fits['size']['flop_vs_pixels_exponent'] > 0
  assert fits['proposals']['gflop_per_1000_rois'] > 0
  assert fits['batch']['sec_per_image_relative_to_first'][0] == [1, 1.0]
  assert common.exit_status(records) == 0


def test_roofline_bench_tiny(capsys):
  records = bench_roofline.run(bench_roofline.build_parser().parse_args(
      TOY + ['--backbones=tiny', '--sizes=64x96', '--check_backbones=tiny',
             '--check_size=64x96', '--check_training=0']))
  assert _lines(capsys) == records
  roof, table, check = records
  assert roof['mode'] == 'matmul_roofline'
  assert (table['mode'], table['backbone'], table['height'], table['width']) == (
      'flops', 'tiny', 64, 96)
  assert table['train_gflop_per_image'] == pytest.approx(
      table['train_forward_gflop'] + table['train_backward_gflop'], rel=1e-3)
  assert table['inference_sec_per_image_at_roofline'] == pytest.approx(
      table['inference_gflop_per_image'] / roof['matmul_gflops'], rel=1e-3)
  assert check['mode'] == 'profiler_check' and check['relative_difference'] == 0.0


def test_eval_speed_bench_tiny(capsys):
  records = bench_eval_speed.run(bench_eval_speed.build_parser().parse_args(
      ['--images=20', '--detections_per_image=5', '--shapes_images=3', '--shapes_size=64',
       '--repeats=1']))
  assert _lines(capsys) == records
  voc, voc07, drawn = records
  assert [(r['mode'], r.get('metric')) for r in records] == [
      ('voc_eval', 'voc'), ('voc_eval', 'voc07'), ('shapes_records', None)]
  for rec in (voc, voc07):
    assert rec['detections'] == 100 and rec['images'] == 20
    assert rec['over_sort'] == pytest.approx(rec['sec_median'] / rec['sort_sec_median'],
                                             rel=1e-3)
    assert 0.0 < rec['map'] < 1.0  # noisy copies: some hits, some misses
  assert drawn['images'] == 3 and drawn['ms_per_image'] > 0 and drawn['over_random_fill'] > 0


def test_compare_torchvision_reports_a_missing_file_in_one_line(tmp_path, capsys):
  missing = tmp_path / 'none.jsonl'
  assert compare_torchvision.main([str(missing), f'--torchvision={missing}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(missing) in err[0] and 'FileNotFoundError' in err[0], err


# ---------------------------------------------------------------- subprocess scripts


def _bench(script, *args, env=None):
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  full_env.update(env or {})
  return subprocess.run([sys.executable, os.path.join(run_helpers.ROOT, 'bench', script),
                         *args], cwd=run_helpers.ROOT, env=full_env, capture_output=True,
                        text=True, timeout=600)


def _records(stdout):
  return [json.loads(line) for line in stdout.splitlines() if line.startswith('{')]


def test_input_pipeline_bench_tiny():
  result = _bench('bench_input_pipeline.py', '--datasets=shapes', '--batch_size=2',
                  '--num_batches=2', '--min_size=64', '--max_size=64',
                  '--train_backbone=tiny', '--train_steps=1')
  assert result.returncode == 0, result.stderr[-3000:]
  (rec,) = _records(result.stdout)
  assert (rec['bench'], rec['dataset'], rec['batch_size'], rec['min_size']) == (
      'input_pipeline', 'shapes', 2, 64)
  assert rec['images_per_s'] > 0 and rec['train_images_per_s'] > 0
  assert rec['pipeline_over_training'] == pytest.approx(
      rec['images_per_s'] / rec['train_images_per_s'], rel=0.05)  # both rounded


def _toy_config(tmp_path):
  config = tmp_path / 'toy.cfg'
  config.write_text(f'--flagfile={run_helpers.TINY_CFG}\n--num_steps=2\n'
                    '--shapes_train_images=4\n--shapes_test_images=2\n--checkpoint_every=2\n')
  return str(config)


def test_quickstart_bench_exits_nonzero_when_training_fails(tmp_path):
  """Its one measurement fails (train.py cannot start): the record says so and the exit
  status is train.py's. (A training that works: the next test, same code.)"""
  missing = str(tmp_path / 'missing.cfg')
  result = _bench('bench_quickstart.py', f'--config={missing}', env={'TMPDIR': str(tmp_path)})
  assert result.returncode != 0
  (rec,) = _records(result.stdout)
  assert rec['bench'] == 'quickstart' and rec['config'] == missing
  assert rec['returncode'] == result.returncode and rec['map50_voc07'] is None
  assert rec['budget_seconds'] == 900 and rec['target_map50'] == 0.90
  assert rec['fraction_of_budget'] == pytest.approx(rec['wall_seconds'] / 900, abs=1e-3)
  assert rec['model_dir'].startswith(str(tmp_path))


def test_backbone_accuracy_bench_exits_nonzero_when_a_run_fails(tmp_path):
  """A toy run (bench_quickstart.run_training: train.py in a fresh folder) and a config
  that does not exist (the reference): the failed run's record, a comparison with no
  difference, and a non-zero exit status."""
  missing = str(tmp_path / 'missing.cfg')
  result = _bench('bench_backbone_accuracy.py', f'--configs={_toy_config(tmp_path)},{missing}',
                  env={'TMPDIR': str(tmp_path)})
  assert result.returncode != 0
  toy, failed, comparison = _records(result.stdout)
  assert toy['returncode'] == 0 and 0.0 <= toy['map50_voc07'] <= 1.0
  assert toy['model_dir'].startswith(str(tmp_path)) and toy['wall_seconds'] > 0
  assert os.path.isfile(os.path.join(toy['model_dir'], 'final_eval.json'))
  assert failed['config'] == missing and failed['returncode'] != 0
  assert failed['map50_voc07'] is None
  assert comparison['bench'] == 'backbone_accuracy_comparison'
  assert comparison['map_difference'] is None and comparison['goal_met'] is False


def test_torchvision_bench_without_torch_is_one_line_and_status_2(tmp_path):
  # A torch package that cannot be imported stands first on the path, so the check
  # holds whether or not this machine has torch.
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text(
      "raise ImportError('No module named torch')\n")
  result = _bench('bench_torchvision.py', '--models=vgg16', '--modes=inference',
                  env={'PYTHONPATH': f'{tmp_path}{os.pathsep}{run_helpers.ROOT}'})
  assert result.returncode == 2
  assert result.stdout == ''
  err = result.stderr.strip().splitlines()
  assert err == ['bench_torchvision.py: error: needs torch and torchvision, which the '
                 'requirements files do not install (No module named torch): pip install '
                 'torch torchvision'], result.stderr
