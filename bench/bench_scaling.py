"""How inference cost grows: seconds against image size, number of proposals, batch size.

    python bench/bench_scaling.py [--backbones=vgg16,mobilenet_v2]
        [--sweeps=size,proposals,batch] [--sizes=300x400,450x600,600x800,750x1000]
        [--proposals=300,1000,2000] [--scaling_batches=1,2,4,8] [--base_size=600x800]
        [--xla=off|on|both] [--repeats=3] [--warmup=1] [--threads=2]

Sweeps (tf.function(model.detect), random weights, 20 classes):
  size       batch 1, 300 RoIs, each --sizes;
  proposals  batch 1 at --base_size, test_post_nms_topk = each --proposals (the model is
             rebuilt with the same seed, so the weights are the same);
  batch      300 RoIs at --base_size, each --scaling_batches.
Prints one JSON line per point ("bench": "scaling", "sweep", "x", plus the inference
fields) and one "fit" line per sweep:
  size:      exponent of seconds against pixels (log-log least squares) next to the
             exponent of the FLOPs (what a constant GFLOP/s would give), and seconds
             per megapixel of a linear fit;
  proposals: seconds per 1000 RoIs and the intercept of a linear fit, and the FLOPs'
             slope;
  batch:     seconds per image at each batch relative to batch 1.
"""

import argparse
import math
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

SWEEPS = ('size', 'proposals', 'batch')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backbones', default='vgg16,mobilenet_v2')
  parser.add_argument('--sweeps', default=','.join(SWEEPS))
  parser.add_argument('--sizes', default='300x400,450x600,600x800,750x1000')
  parser.add_argument('--proposals', default='300,1000,2000')
  parser.add_argument('--scaling_batches', default='1,2,4,8')
  parser.add_argument('--base_size', default='600x800')
  parser.add_argument('--xla', default='off', choices=('off', 'on', 'both'))
  common.add_common_args(parser, repeats=3, warmup=1)
  return parser


def linear_fit(xs, ys):
  """(slope, intercept) of least squares y = slope * x + intercept."""
  n = len(xs)
  if n < 2:
    return None, None
  mx, my = sum(xs) / n, sum(ys) / n
  sxx = sum((x - mx) ** 2 for x in xs)
  if sxx == 0:
    return None, None
  slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
  return slope, my - slope * mx


def loglog_exponent(xs, ys):
  slope, _ = linear_fit([math.log(x) for x in xs], [math.log(y) for y in ys])
  return slope


def _measure(args, fn, batch, height, width, seed):
  import tensorflow as tf
  images, sizes = common.random_images(batch, height, width, seed)
  images, sizes = tf.constant(images), tf.constant(sizes)
  return common.time_fn(lambda: common.to_host(fn(images, sizes)), args.warmup, args.repeats)


def run(args):
  """Runs the sweeps; returns the records (each also printed)."""
  import tensorflow as tf
  from bench import flops as flops_lib

  sweeps = common.parse_list(args.sweeps)
  for s in sweeps:
    if s not in SWEEPS:
      raise ValueError(f'--sweeps: unknown sweep {s!r}; choose from {SWEEPS}')
  base_h, base_w = common.parse_sizes(args.base_size)[0]
  jits = {'off': [False], 'on': [True], 'both': [False, True]}[args.xla]
  matmul = common.start('scaling', args)
  records = [common.matmul_record('scaling', args, matmul)]

  def emit_point(sweep, x, backbone, mode, height, width, batch, num_rois, warm, times,
                 flop):
    fields = common.timing_fields(times, batch, warm)
    rec = {'bench': 'scaling', 'sweep': sweep, 'x': x,
           'config': f'{backbone}/voc{args.num_classes}/rois{num_rois}',
           'backbone': backbone, 'mode': mode, 'height': height, 'width': width,
           'batch': batch, 'num_rois': num_rois}
    rec.update(common.thread_info(args.threads))
    rec.update(fields)
    rec.update(common.roofline_fields(flop['total'], fields['sec_per_image_median'], matmul))
    rec['load_avg'] = common.host_fields()['load_avg']
    records.append(common.emit(rec))
    return rec

  def emit_fit(sweep, backbone, mode, points, extra):
    rec = {'bench': 'scaling', 'sweep': sweep, 'fit': True, 'backbone': backbone,
           'mode': mode, 'threads': args.threads,
           'points': [[p['x'], p['sec_per_image_median']] for p in points]}
    rec.update(extra)
    records.append(common.emit(rec))

  for backbone in common.parse_list(args.backbones):
    for jit in jits:
      mode = 'xla' if jit else 'tf_function'
      model = common.build_model(backbone, args.num_classes, args.seed)
      fn = tf.function(model.detect, jit_compile=jit)
      num_rois = model.proposal_layer.test_post_nms_topk

      if 'size' in sweeps:
        points = []
        for height, width in common.parse_sizes(args.sizes):
          flop = flops_lib.model_flops(model, height, width)
          warm, times = _measure(args, fn, 1, height, width, args.seed)
          rec = emit_point('size', f'{height}x{width}', backbone, mode, height, width, 1,
                           num_rois, warm, times, flop)
          rec['_pixels'], rec['_flop'] = height * width, flop['total']
          points.append(rec)
        if len(points) >= 2:
          px = [p['_pixels'] for p in points]
          secs = [p['sec_per_image_median'] for p in points]
          slope, intercept = linear_fit([p / 1e6 for p in px], secs)
          emit_fit('size', backbone, mode, points, {
              'sec_vs_pixels_exponent': common._round(loglog_exponent(px, secs), 4),  # pylint: disable=protected-access
              'flop_vs_pixels_exponent': common._round(  # pylint: disable=protected-access
                  loglog_exponent(px, [p['_flop'] for p in points]), 4),
              'sec_per_megapixel': common._round(slope),  # pylint: disable=protected-access
              'intercept_s': common._round(intercept)})  # pylint: disable=protected-access
        for p in points:
          p.pop('_pixels'), p.pop('_flop')

      if 'proposals' in sweeps:
        points = []
        for n in common.parse_ints(args.proposals):
          m = common.build_model(backbone, args.num_classes, args.seed, test_post_nms_topk=n)
          f = tf.function(m.detect, jit_compile=jit)
          flop = flops_lib.model_flops(m, base_h, base_w)
          warm, times = _measure(args, f, 1, base_h, base_w, args.seed)
          rec = emit_point('proposals', n, backbone, mode, base_h, base_w, 1, n, warm, times,
                           flop)
          rec['_flop'] = flop['total']
          points.append(rec)
          del m, f
        if len(points) >= 2:
          ns = [p['x'] for p in points]
          slope, intercept = linear_fit(ns, [p['sec_per_image_median'] for p in points])
          fslope, _ = linear_fit(ns, [p['_flop'] for p in points])
          emit_fit('proposals', backbone, mode, points, {
              'sec_per_1000_rois': common._round(slope * 1000),  # pylint: disable=protected-access
              'intercept_s': common._round(intercept),  # pylint: disable=protected-access
              'gflop_per_1000_rois': common._round(fslope * 1000 / 1e9),  # pylint: disable=protected-access
              'sec_per_1000_rois_at_matmul_peak': common._round(  # pylint: disable=protected-access
                  fslope * 1000 / (matmul['matmul_gflops'] * 1e9))})
        for p in points:
          p.pop('_flop')

      if 'batch' in sweeps:
        points = []
        flop = flops_lib.model_flops(model, base_h, base_w)
        for batch in common.parse_ints(args.scaling_batches):
          warm, times = _measure(args, fn, batch, base_h, base_w, args.seed)
          points.append(emit_point('batch', batch, backbone, mode, base_h, base_w, batch,
                                   num_rois, warm, times, flop))
        if points:
          first = points[0]['sec_per_image_median']
          emit_fit('batch', backbone, mode, points, {
              'sec_per_image_relative_to_first': [
                  [p['x'], common._round(p['sec_per_image_median'] / first, 4)]  # pylint: disable=protected-access
                  for p in points]})
      del model, fn
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
