"""Smoke test of the speed benchmarks (bench/): one tiny inference measurement and the
FLOP counter against TensorFlow's profiler. Numbers are not checked, only the fields."""

import json
import re

import pytest

from bench import bench_conv_kernels
from bench import bench_inference
from bench import common
from bench import flops

INFERENCE_FIELDS = ('bench', 'config', 'backbone', 'mode', 'height', 'width', 'batch',
                    'threads', 'sec_per_image_median', 'sec_per_image_min',
                    'sec_per_image_max', 'images_per_s', 'gflop_per_image',
                    'achieved_gflops', 'matmul_gflops', 'roofline_fraction')


def test_inference_bench_tiny_and_flop_counter(capsys):
  args = bench_inference.build_parser().parse_args([
      '--backbones=tiny', '--sizes=64x96', '--batches=1', '--modes=tf_function',
      '--repeats=1', '--warmup=1', '--matmul_size=64', '--matmul_repeats=1',
      '--num_rois=16', '--bandwidth_mb=8'])
  records = bench_inference.run(args)
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
  assert lines == records
  assert records[0]['mode'] == 'matmul_roofline' and records[0]['matmul_gflops'] > 0
  (rec,) = records[1:]
  for field in INFERENCE_FIELDS:
    assert rec.get(field) is not None, field
  assert (rec['backbone'], rec['mode'], rec['height'], rec['width'], rec['batch']) == (
      'tiny', 'tf_function', 64, 96, 1)
  assert rec['sec_per_image_min'] <= rec['sec_per_image_median'] <= rec['sec_per_image_max']
  assert abs(rec['roofline_fraction'] * rec['matmul_gflops'] - rec['achieved_gflops']) < (
      1e-3 * rec['achieved_gflops'] + 1e-6)
  assert records[0]['bandwidth_gbs'] > 0
  assert rec['bound_fraction'] == pytest.approx(
      rec['bound_sec_per_image'] / rec['sec_per_image_median'], rel=1e-3)

  # The layer-shape FLOP counter equals TF's profiler on the traced detect graph.
  model = common.build_model('tiny', test_post_nms_topk=16)
  check = flops.cross_check(model, 64, 96, training=False)
  assert check['relative_difference'] == 0.0, check
  assert abs(check['counter_gflop_per_image'] - rec['gflop_per_image']) < 1e-4


def test_inference_bench_times_folded_and_unfolded_interleaved(capsys):
  args = bench_inference.build_parser().parse_args([
      '--backbones=tiny', '--sizes=64x96', '--modes=tf_function',
      '--repeats=2', '--warmup=1', '--matmul_size=64', '--matmul_repeats=1',
      '--num_rois=16', '--fold_batch_norm=both', '--batches=1,2', '--bandwidth_mb=8'])
  records = bench_inference.run(args)[1:]
  capsys.readouterr()
  assert [(r['batch'], r['fold_batch_norm']) for r in records] == [
      (1, True), (1, False), (2, True), (2, False)]
  by_key = {(r['batch'], r['fold_batch_norm']): r for r in records}
  for batch in (1, 2):
    folded, unfolded = by_key[(batch, True)], by_key[(batch, False)]
    assert folded['speedup_over_unfolded'] == pytest.approx(
        unfolded['sec_per_image_median'] / folded['sec_per_image_median'], rel=1e-3)
    assert 'speedup_over_unfolded' not in unfolded
  for fold in (True, False):
    assert by_key[(2, fold)]['throughput_over_batch_1'] == pytest.approx(
        by_key[(1, fold)]['sec_per_image_median'] / by_key[(2, fold)]['sec_per_image_median'],
        rel=1e-3)
    assert 'throughput_over_batch_1' not in by_key[(1, fold)]


def test_inference_bench_compares_precisions_and_nms_methods_interleaved(capsys):
  args = bench_inference.build_parser().parse_args([
      '--backbones=tiny', '--sizes=64x96', '--modes=tf_function',
      '--repeats=2', '--warmup=1', '--matmul_size=64', '--matmul_repeats=1',
      '--num_rois=16', '--batches=1', '--bandwidth_mb=8',
      '--compare_precisions=mixed_bfloat16', '--nms_methods=kernel,batched'])
  records = bench_inference.run(args)
  capsys.readouterr()
  roofs = [r for r in records if r['mode'] == 'matmul_roofline']
  assert [(r['precision'], r['matmul_dtype']) for r in roofs] == [
      ('float32', 'float32'), ('mixed_bfloat16', 'bfloat16')]
  by_key = {(r['nms_method'], r['precision']): r for r in records if r not in roofs}
  assert sorted(by_key) == [('batched', 'float32'), ('batched', 'mixed_bfloat16'),
                            ('kernel', 'float32'), ('kernel', 'mixed_bfloat16')]
  assert common.precision() == 'float32'  # the models' policies did not leak
  for nms in ('kernel', 'batched'):
    bf16, fp32 = by_key[(nms, 'mixed_bfloat16')], by_key[(nms, 'float32')]
    assert bf16['speedup_over_first_precision'] == pytest.approx(
        fp32['sec_per_image_median'] / bf16['sec_per_image_median'], rel=1e-3)
    assert bf16['matmul_gflops'] == roofs[1]['matmul_gflops']
    assert 'speedup_over_first_precision' not in fp32
  for policy in ('float32', 'mixed_bfloat16'):
    batched, kernel = by_key[('batched', policy)], by_key[('kernel', policy)]
    assert batched['speedup_over_first_nms_method'] == pytest.approx(
        kernel['sec_per_image_median'] / batched['sec_per_image_median'], rel=1e-3)


def test_inference_bench_compares_inference_splits_interleaved(capsys):
  args = bench_inference.build_parser().parse_args([
      '--backbones=tiny', '--sizes=64x96', '--modes=tf_function',
      '--repeats=2', '--warmup=1', '--matmul_size=64', '--matmul_repeats=1',
      '--num_rois=16', '--batches=1,4', '--bandwidth_mb=8', '--inference_splits=1,2'])
  records = bench_inference.run(args)
  capsys.readouterr()
  by_key = {(r['batch'], r['inference_splits']): r for r in records
            if r['mode'] != 'matmul_roofline'}
  # Batch 1 runs the same graph whatever the splits: timed once, under the first value.
  assert sorted(by_key) == [(1, '1'), (4, '1'), (4, '2')]
  assert [by_key[k]['sub_batches'] for k in sorted(by_key)] == [1, 1, 2]
  one, two = by_key[(4, '1')], by_key[(4, '2')]
  assert two['speedup_over_first_inference_splits'] == pytest.approx(
      one['sec_per_image_median'] / two['sec_per_image_median'], rel=1e-3)
  assert 'speedup_over_first_inference_splits' not in one
  for rec in (one, two):
    assert rec['throughput_over_batch_1'] == pytest.approx(
        by_key[(1, '1')]['sec_per_image_median'] / rec['sec_per_image_median'], rel=1e-3)


@pytest.mark.parametrize('flag, message', [
    ('--nms_methods=kernel,fast', "--nms_methods: unknown value 'fast'"),
    ('--compare_precisions=fp8', "--compare_precisions: unknown value 'fp8'"),
    ('--inference_splits=2,0', "--inference_splits: inference_splits: expected 'auto' or "
     "a positive integer, got '0'")])
def test_inference_bench_names_a_bad_variant_flag(flag, message):
  args = bench_inference.build_parser().parse_args(['--backbones=tiny', flag])
  with pytest.raises(ValueError, match=re.escape(message)):
    bench_inference.run(args)


def test_time_interleaved_takes_turns():
  calls = []
  timings = common.time_interleaved({'a': lambda: calls.append('a'),
                                     'b': lambda: calls.append('b')}, warmup=1, repeats=2)
  assert calls == ['a', 'b'] * 3
  assert {name: (len(warm), len(times)) for name, (warm, times) in timings.items()} == {
      'a': (1, 2), 'b': (1, 2)}


def test_conv_kernel_bench_tiny(capsys):
  args = bench_conv_kernels.build_parser().parse_args([
      '--layers=8x10x4', '--backbone=tiny', '--backbone_size=64x48', '--repeats=1',
      '--warmup=1', '--matmul_size=64', '--matmul_repeats=1'])
  records = bench_conv_kernels.run(args)
  assert [json.loads(line) for line in capsys.readouterr().out.splitlines() if line] == records
  kernels = [(r['part'], r['library']) for r in records if 'layer' in r]
  assert sorted(kernels) == sorted((p, lib) for p in bench_conv_kernels.PARTS
                                   for lib in ('tensorflow_onednn', 'xla'))
  backbone = [r for r in records if r.get('part') == 'backbone_forward_and_gradients']
  assert [r['library'] for r in backbone] == ['tensorflow_onednn', 'xla', 'hybrid_conv',
                                              'hybrid_conv_onednn_input_grad']
  assert [r.get('input_grad_library') for r in backbone] == [None, None, 'xla', 'onednn']
  # tiny at 64x48: four (3x3 conv, 3x3 stride-2 conv) pairs, 3->16->16, 16->32->32, ...;
  # nothing frozen: forward + filter gradients everywhere, input gradients above the first.
  flop, h, w, cin, first = 0.0, 64, 48, 3, True
  for ch in (16, 32, 64, 128):
    for stride in (1, 2):
      h, w = -(-h // stride), -(-w // stride)
      conv = 2.0 * h * w * 9 * cin * ch
      flop += conv * (2 if first else 3)
      first, cin = False, ch
  for rec in backbone:
    assert rec['gflop_per_image'] == pytest.approx(flop / 1e9, rel=1e-4)


def test_saved_model_structure_reads_the_training_run(tiny_model_dir, tmp_path):
  """An export.py export names its run folder; the FLOP model takes that run's flags."""
  export = tmp_path / '1'
  export.mkdir()
  (export / 'export_info.json').write_text(json.dumps({
      'class_names': ['circle', 'square', 'triangle'], 'backbone': 'tiny',
      'model_dir': tiny_model_dir, 'min_size': 64, 'max_size': 64, 'pad_multiple': 32}))
  kwargs, min_size, max_size, pad = bench_inference.saved_model_structure(str(export))
  assert (min_size, max_size, pad) == (64, 64, 32)
  # tests/tiny_run.cfg's values, not the model defaults.
  assert kwargs['backbone'] == 'tiny' and kwargs['num_classes'] == 3
  assert kwargs['rpn_channels'] == 32 and kwargs['test_post_nms_topk'] == 32
  assert kwargs['anchor_scales'] == (1.0, 2.0, 4.0)
  assert 'backbone_weights' not in kwargs


def test_roofline_bound_is_flops_or_bytes_whichever_is_slower():
  model = common.build_model('tiny', test_post_nms_topk=16)
  # Unlimited bandwidth: the bound is the FLOP count at the matmul rate.
  by_flops = flops.roofline_bound_seconds(model, 64, 96, 1, 100.0, 1e12)
  assert by_flops['total'] == pytest.approx(
      flops.model_flops(model, 64, 96)['total'] / 100e9, rel=1e-6)
  # Unlimited FLOP rate: bytes at the bandwidth. The tiny backbone by hand: per stage a
  # 3x3 conv (cin -> ch) and a 3x3 stride-2 conv (ch -> ch), each reading its input,
  # writing its output and reading its weights (kernel + bias) once per batch.
  # Under mixed precision (activation_bytes=2) the activations move half the bytes.
  for batch, value_bytes in ((1, 4), (4, 4), (4, 2)):
    moved, h, w, cin = 0.0, 64, 96, 3
    for ch in (16, 32, 64, 128):
      moved += value_bytes * (h * w * cin + h * w * ch) + 4 * (9 * cin * ch + ch) / batch
      moved += (value_bytes * (h * w * ch + (h // 2) * (w // 2) * ch)
                + 4 * (9 * ch * ch + ch) / batch)
      h, w, cin = h // 2, w // 2, ch
    by_bytes = flops.roofline_bound_seconds(model, 64, 96, batch, 1e12, 2.0,
                                            activation_bytes=value_bytes)
    assert by_bytes['backbone'] == pytest.approx(moved / 2e9, rel=1e-6)
  # Mixed: never faster than either limit alone, part by part.
  mixed = flops.roofline_bound_seconds(model, 64, 96, 1, 100.0, 2.0)
  by_bytes = flops.roofline_bound_seconds(model, 64, 96, 1, 1e12, 2.0)
  for part in ('backbone', 'rpn', 'roi_head', 'total'):
    assert mixed[part] >= max(by_flops[part], by_bytes[part]) * (1 - 1e-9)
  assert flops.roofline_bound_seconds(model, 64, 96, 1, 100.0, None) is None


def test_bandwidth_is_measured_and_printed_with_the_roofline(capsys):
  measured = common.measure_bandwidth(8, repeats=1)
  assert measured['bandwidth_gbs'] == max(measured['numpy_bandwidth_gbs'],
                                          measured['tf_bandwidth_gbs']) > 0
  assert common.measure_bandwidth(0) == {}
  assert common.bound_fields(0.5, 2.0) == {'bound_sec_per_image': 0.5, 'bound_fraction': 0.25}


def test_saved_model_mode_times_several_exports_interleaved(tmp_path, capsys):
  from bench import export_random
  base = str(tmp_path / 'exports')
  paths = [export_random.export(export_random.build_parser().parse_args([
      '--backbone=tiny', f'--export_dir={base}', '--min_size=64', '--max_size=96',
      '--num_rois=16'])) for _ in range(2)]
  args = bench_inference.build_parser().parse_args([
      '--modes=saved_model', f'--saved_model={paths[0]},{base}', '--sizes=64x96',
      '--batches=1,2', '--repeats=2', '--warmup=1', '--matmul_size=64',
      '--matmul_repeats=1', '--bandwidth_mb=8'])
  records = bench_inference.run(args)[1:]
  capsys.readouterr()
  assert [(r['saved_model'], r['batch']) for r in records] == [
      (paths[0], 1), (paths[0], 2), (paths[1], 1), (paths[1], 2)]  # BASE -> latest
  by_key = {(r['saved_model'], r['batch']): r for r in records}
  for path in paths:
    assert by_key[(path, 2)]['throughput_over_batch_1'] == pytest.approx(
        by_key[(path, 1)]['sec_per_image_median'] / by_key[(path, 2)]['sec_per_image_median'],
        rel=1e-3)
  for batch in (1, 2):
    assert 'speedup_over_first_saved_model' not in by_key[(paths[0], batch)]
    assert by_key[(paths[1], batch)]['speedup_over_first_saved_model'] == pytest.approx(
        by_key[(paths[0], batch)]['sec_per_image_median']
        / by_key[(paths[1], batch)]['sec_per_image_median'], rel=1e-3)
  assert all(r['network_input_size'] == [64, 96] and r['gflop_per_image'] > 0
             for r in records)


def test_compare_torchvision_joins_matching_lines(tmp_path, capsys):
  from bench import compare_torchvision
  ours = [
      {'bench': 'inference', 'backbone': 'vgg16', 'mode': 'tf_function', 'height': 600,
       'width': 800, 'batch': 1, 'precision': 'float32', 'sec_per_image_median': 0.02},
      {'bench': 'inference', 'backbone': 'vgg16', 'mode': 'xla', 'height': 600,
       'width': 800, 'batch': 1, 'precision': 'float32', 'sec_per_image_median': 0.5},
      {'bench': 'train_step', 'backbone': 'mobilenet_v2', 'mode': 'train_step',
       'height': 600, 'width': 800, 'batch': 4, 'precision': 'mixed_float16',
       'sec_per_image_median': 0.01},
      {'bench': 'inference', 'backbone': 'resnet50', 'mode': 'tf_function', 'height': 600,
       'width': 800, 'batch': 1, 'precision': 'float32', 'sec_per_image_median': 0.03}]
  tv = [
      {'bench': 'torchvision', 'mode': 'matmul_roofline'},
      {'bench': 'torchvision', 'model': 'vgg16', 'mode': 'inference', 'amp': False,
       'height': 600, 'width': 800, 'batch': 1, 'sec_per_image_median': 0.03},
      {'bench': 'torchvision', 'model': 'vgg16', 'mode': 'inference', 'amp': True,
       'height': 600, 'width': 800, 'batch': 1, 'sec_per_image_median': 0.01},
      {'bench': 'torchvision', 'model': 'mobilenet_v3_fpn', 'mode': 'train_step',
       'amp': True, 'height': 600, 'width': 800, 'batch': 4, 'sec_per_image_median': 0.025}]
  ours_path, tv_path = tmp_path / 'ours.jsonl', tmp_path / 'tv.jsonl'
  ours_path.write_text('NOTE: not json\n' + ''.join(json.dumps(r) + '\n' for r in ours))
  tv_path.write_text(''.join(json.dumps(r) + '\n' for r in tv))
  assert compare_torchvision.main([str(ours_path), f'--torchvision={tv_path}']) == 0
  rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  # The XLA line and ResNet50 (no torchvision counterpart) are left out; float32 pairs
  # with amp off, mixed_float16 with amp on.
  assert [(r['backbone'], r['mode'], r['precision'], r['batch']) for r in rows] == [
      ('vgg16', 'inference', 'float32', 1), ('mobilenet_v2', 'train_step', 'mixed_float16', 4)]
  assert rows[0]['speedup_over_torchvision'] == pytest.approx(1.5)
  assert rows[1]['speedup_over_torchvision'] == pytest.approx(2.5)
  assert compare_torchvision.main([str(tv_path), f'--torchvision={tv_path}']) == 1


def test_previous_code_bench_against_this_tree(capsys):
  """bench_previous.py with this tree as the 'previous' code: a renamed copy runs beside
  it, and the two traced graphs have the same ops."""
  import os
  from bench import bench_previous
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  args = bench_previous.build_parser().parse_args([
      f'--previous={root}', '--cases=inference', '--inference_size=64x96', '--repeats=2',
      '--warmup=1'])
  (record,) = bench_previous.run(args)
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record
  assert (record['case'], record['size'], record['batch']) == ('inference', '64x96', 1)
  assert len(record['sec_current_all']) == len(record['sec_previous_all']) == 2
  assert record['ratio_current_over_previous'] == pytest.approx(
      record['sec_current_median'] / record['sec_previous_median'], rel=5e-2)
  assert record['graph_ops_current'] == record['graph_ops_previous'] > 100
  assert record['graph_op_type_differences'] == {}
