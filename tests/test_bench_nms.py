"""Smoke test of bench/bench_nms.py at toy sizes: every stage, method and mode gives a
line, the methods keep the same number of boxes, and the whole-step part runs."""

import json

import pytest

from bench import bench_nms


def test_bench_nms_tiny(capsys):
  args = bench_nms.build_parser().parse_args([
      '--stages=proposals_6000,detections', '--feature_size=10x12', '--images=2',
      '--tile_sizes=64', '--steps=inference,train', '--backbones=tiny', '--sizes=64x96',
      '--step_modes=tf_function,xla', '--repeats=1', '--warmup=1', '--matmul_size=64',
      '--matmul_repeats=1', '--bandwidth_mb=8', '--num_classes=3'])
  records = bench_nms.run(args)
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
  assert lines == records and records[0]['mode'] == 'matmul_roofline'
  stages = [r for r in records if r['bench'] == 'nms' and 'stage' in r]
  assert len(stages) == 2 * 2 * 2  # stages x methods x modes
  for stage in ('proposals_6000', 'detections'):
    rows = [r for r in stages if r['stage'] == stage]
    assert {(r['method'], r['mode']) for r in rows} == {
        ('kernel', 'tf_function'), ('kernel', 'xla'), ('tiled', 'tf_function'),
        ('tiled', 'xla')}
    assert len({tuple(r['kept_per_image']) for r in rows}) == 1, rows  # same NMS result
    assert all(r['sec_min'] <= r['sec_median'] <= r['sec_max'] for r in rows)
    (base,) = [r for r in rows if (r['method'], r['mode']) == ('kernel', 'tf_function')]
    assert base['speedup_over_kernel_tf_function'] == 1.0
    for r in rows:
      assert abs(r['speedup_over_kernel_tf_function'] * r['sec_median']
                 - base['sec_median']) < 0.01 * base['sec_median'] + 1e-6
  steps = [r for r in records if r['bench'] == 'nms_step']
  assert {(r['part'], r['mode']) for r in steps} == {
      ('inference', 'tf_function'), ('inference', 'xla'), ('train', 'tf_function'),
      ('train', 'xla')}
  assert all(r['sec_median'] > 0 for r in steps)


def test_bench_nms_refuses_an_unknown_stage(capsys):
  with pytest.raises(SystemExit) as e:
    bench_nms.main(['--stages=proposals_9000'])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert '--stages' in err and 'proposals_9000' in err and 'Traceback' not in err
