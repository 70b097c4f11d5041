"""NMS speed by method, compiled with XLA and not, and what it does to the whole step.

    python bench/bench_nms.py [--stages=proposals_6000,proposals_12000,detections]
        [--methods=kernel,tiled] [--tile_sizes=512] [--xla=both] [--images=2]
        [--feature_size=38x50] [--steps=train,inference] [--backbones=vgg16,mobilenet_v2]
        [--sizes=600x800] [--step_modes=tf_function,xla_backbone,xla]
        [--repeats=5] [--warmup=1] [--threads=2]

Part 1, the NMS stages, each a tf.function (jit_compile off and on) of:
  proposals_6000   `generate_proposals` at inference numbers: 6000 -> 300 boxes per image
  proposals_12000  ... at training numbers: 12000 -> 2000
  detections       `DetectionGenerator`: 300 RoIs x 20 classes per image, per-class NMS
                   (IoU 0.3, score threshold 0.05), the top 100
for each --methods entry (`ops.nms`: 'kernel' is TF's NMS kernel, 'tiled' the plain-ops
form, once per --tile_sizes). Inputs are an untrained RPN's: --images images of a
--feature_size feature map (stride 16: 38x50 for 600x800; 9 anchors per cell, 17100),
foreground probabilities uniform in [0, 1), box deltas normal(0, 0.2); head inputs are
300 random RoIs with softmax(normal) class probabilities and normal(0, 0.5) deltas. All
variants of a stage are timed interleaved (call by call). Lines:
  {"bench": "nms", "stage", "method", "tile_size", "mode" (tf_function / xla),
   "sec_median", "sec_min", "sec_max", "first_call_s", "kept_per_image",
   "speedup_over_kernel_tf_function"}  (the kernel outside XLA, measured in the same run).

Part 2, the whole step per --backbones (random weights, 20 classes), at --sizes, batch 1:
  train      training.trainer.Trainer's step (as bench_train_step.py);
  inference  tf.function(model.detect);
each in --step_modes: tf_function (nothing compiled), xla_backbone (the model's
compile_backbone: XLA backbone, and in training the hybrid convolutions), xla (the whole
step jit_compile=True). NMS methods are the model's 'auto' unless --step_nms names one:
the kernel outside XLA, the tiled form inside (--step_nms=auto,kernel adds the models
with TF's kernel everywhere: under XLA, the step as it was before the tiled form). Lines:
  {"bench": "nms_step", "part", "backbone", "mode", "nms", "sec_median", ...,
   "speedup_over_tf_function"} (against tf_function with the same --step_nms entry).
Inference variants are timed interleaved; training steps are interleaved across the
--step_nms methods of one mode, the modes one after the other (three VGG16 trainers per
method at once would need several GB), so ratios between modes are noisier.
"""

import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

STAGES = {'proposals_6000': (6000, 300), 'proposals_12000': (12000, 2000),
          'detections': None}
STEP_MODES = ('tf_function', 'xla_backbone', 'xla')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--stages', default=','.join(STAGES), help=f'Any of {tuple(STAGES)}.')
  parser.add_argument('--methods', default='kernel,tiled', help='ops.nms methods.')
  parser.add_argument('--tile_sizes', default='512', help="Tile sizes of 'tiled'.")
  parser.add_argument('--xla', default='both', choices=('off', 'on', 'both'))
  parser.add_argument('--images', type=int, default=2, help='Images per NMS stage call.')
  parser.add_argument('--feature_size', default='38x50',
                      help='Feature map HxW of the proposal stages (9 anchors per cell).')
  parser.add_argument('--steps', default='train,inference',
                      help="Whole-step parts: train, inference, or '' for none.")
  parser.add_argument('--backbones', default='vgg16,mobilenet_v2')
  parser.add_argument('--sizes', default='600x800', help='HxW of the whole-step parts.')
  parser.add_argument('--step_modes', default=','.join(STEP_MODES),
                      help=f'Any of {STEP_MODES}.')
  parser.add_argument('--step_nms', default='auto',
                      help="The models' proposal and detection NMS method (ops.nms); "
                      'several, comma-separated: each in every mode.')
  parser.add_argument('--learning_rate', type=float, default=0.001)
  parser.add_argument('--freeze_early_layers', type=int, default=1,
                      help='1: the model default (VGG16 conv1-2 frozen); 0: train all.')
  common.add_common_args(parser, repeats=5, warmup=1)
  return parser


def _check(args):
  from faster_rcnn_tf.ops import nms
  for stage in common.parse_list(args.stages):
    if stage not in STAGES:
      raise ValueError(f'--stages: unknown stage {stage!r}; choose from {tuple(STAGES)}')
  for method in common.parse_list(args.methods) + common.parse_list(args.step_nms):
    if method not in nms.METHODS:
      raise ValueError(f'--methods / --step_nms: unknown method {method!r}; choose from '
                       f'{nms.METHODS}')
  for mode in common.parse_list(args.step_modes):
    if mode not in STEP_MODES:
      raise ValueError(f'--step_modes: unknown mode {mode!r}; choose from {STEP_MODES}')


def stage_inputs(stage, args):
  """The stage's input tensors (see the module docstring)."""
  import numpy as np
  import tensorflow as tf
  from faster_rcnn_tf.ops import anchors as anchor_ops
  rng = np.random.default_rng(args.seed)
  b = args.images
  if stage == 'detections':
    r, k = 300, args.num_classes
    centres = rng.uniform(50, 550, size=(b, r, 2))
    sides = rng.uniform(20, 300, size=(b, r, 2))
    rois = np.concatenate([centres - sides / 2, centres + sides / 2], -1)
    logits = rng.normal(0, 2, size=(b, r, k + 1))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    deltas = rng.normal(0, 0.5, size=(b, r, 4 * (k + 1)))
    return [tf.constant(rois, tf.float32), tf.ones([b, r], tf.bool),
            tf.constant(probs, tf.float32), tf.constant(deltas, tf.float32),
            tf.constant([[600, 800]] * b, tf.int32)]
  fh, fw = common.parse_sizes(args.feature_size)[0]
  base = anchor_ops.generate_base_anchors(16, (0.5, 1.0, 2.0), (8, 16, 32))
  anchors = anchor_ops.tile_anchors(base, fh, fw, 16)
  n = int(anchors.shape[0])
  scores = rng.uniform(size=(b, n)).astype(np.float32)
  deltas = rng.normal(0, 0.2, size=(b, n, 4)).astype(np.float32)
  return [tf.constant(scores), tf.constant(deltas), anchors,
          tf.constant([[fh * 16, fw * 16]] * b, tf.int32)]


def stage_function(stage, method, tile_size, jit, args):
  """tf.function(jit_compile=jit) of the stage with this NMS method -> (outputs, kept
  count per image)."""
  import tensorflow as tf
  from faster_rcnn_tf.layers.detection_generator import DetectionGenerator
  from faster_rcnn_tf.layers.proposal_layer import generate_proposals

  if stage == 'detections':
    layer = DetectionGenerator(nms_method=method)

    def fn(*inputs):
      out = layer(*inputs)
      return out, out['num_detections']
  else:
    pre, post = STAGES[stage]

    def fn(scores, deltas, anchors, sizes):
      out = generate_proposals(scores, deltas, anchors, sizes, pre, post, 0.7, 0.0,
                               nms_method=method, nms_tile_size=tile_size)
      return out, tf.reduce_sum(tf.cast(out[2], tf.int32), axis=1)
  del args
  return tf.function(fn, jit_compile=jit)


def run_stages(args):
  import statistics
  records = []
  jits = {'off': [False], 'on': [True], 'both': [False, True]}[args.xla]
  for stage in common.parse_list(args.stages):
    inputs = stage_inputs(stage, args)
    variants = {}
    for method in common.parse_list(args.methods):
      tiles = common.parse_ints(args.tile_sizes) if method == 'tiled' else [None]
      for tile in tiles:
        for jit in jits:
          fn = stage_function(stage, method, tile or 512, jit, args)
          variants[(method, tile, jit)] = fn
    kept = {key: common.to_host(fn(*inputs))[1] for key, fn in variants.items()}
    timings = common.time_interleaved(
        {key: (lambda fn=fn: common.to_host(fn(*inputs))) for key, fn in variants.items()},
        args.warmup, args.repeats)
    base = timings.get(('kernel', None, False))
    base_median = statistics.median(base[1]) if base else None
    for (method, tile, jit), (warm, times) in timings.items():
      median = statistics.median(times)
      rec = {'bench': 'nms', 'stage': stage, 'method': method, 'tile_size': tile,
             'mode': 'xla' if jit else 'tf_function', 'images': args.images,
             'repeats': len(times), 'first_call_s': common._round(warm[0]) if warm else None,  # pylint: disable=protected-access
             'sec_median': common._round(median), 'sec_min': common._round(min(times)),  # pylint: disable=protected-access
             'sec_max': common._round(max(times)),  # pylint: disable=protected-access
             'kept_per_image': [int(v) for v in kept[(method, tile, jit)]]}
      if base_median:
        rec['speedup_over_kernel_tf_function'] = common._round(base_median / median, 3)  # pylint: disable=protected-access
      rec.update(common.thread_info(args.threads))
      rec['load_avg'] = common.host_fields()['load_avg']
      records.append(common.emit(rec))
  return records


def _step_record(part, backbone, mode, nms, args, height, width, warm, times, base):
  import statistics
  median = statistics.median(times)
  rec = {'bench': 'nms_step', 'part': part, 'backbone': backbone, 'mode': mode,
         'nms': nms, 'height': height, 'width': width, 'batch': 1,
         'repeats': len(times), 'first_call_s': common._round(warm[0]) if warm else None,  # pylint: disable=protected-access
         'sec_median': common._round(median), 'sec_min': common._round(min(times)),  # pylint: disable=protected-access
         'sec_max': common._round(max(times))}  # pylint: disable=protected-access
  if base:
    rec['speedup_over_tf_function'] = common._round(base / median, 3)  # pylint: disable=protected-access
  rec.update(common.thread_info(args.threads))
  rec['load_avg'] = common.host_fields()['load_avg']
  return common.emit(rec)


def run_steps(args):
  import statistics
  import tensorflow as tf
  from bench import bench_inference
  from bench import bench_train_step
  records = []
  parts = common.parse_list(args.steps)
  modes = common.parse_list(args.step_modes)
  methods = common.parse_list(args.step_nms)
  jit_of = {'tf_function': False, 'xla_backbone': 'backbone', 'xla': True}
  for backbone in common.parse_list(args.backbones):
    for height, width in common.parse_sizes(args.sizes):
      if 'inference' in parts:
        images, sizes = (tf.constant(x) for x in common.random_images(1, height, width,
                                                                      args.seed))
        fns = {}
        for nms in methods:
          model = common.build_model(backbone, args.num_classes, args.seed,
                                     proposal_nms_method=nms, detection_nms_method=nms)
          fns.update({
              ('tf_function', nms): tf.function(model.detect),
              ('xla_backbone', nms): bench_inference._detect_with_compiled_backbone(model),  # pylint: disable=protected-access
              ('xla', nms): tf.function(model.detect, jit_compile=True)})
        timings = common.time_interleaved(
            {key: (lambda f=fns[key]: common.to_host(f(images, sizes)))
             for key in fns if key[0] in modes}, args.warmup, args.repeats)
        base = ({nms: statistics.median(timings[('tf_function', nms)][1]) for nms in methods}
                if 'tf_function' in modes else {})
        for (mode, nms), (warm, times) in timings.items():
          records.append(_step_record('inference', backbone, mode, nms, args, height,
                                      width, warm, times, base.get(nms)))
        del fns
      if 'train' in parts:
        data = common.random_train_batch(1, height, width, seed=args.seed,
                                         num_classes=args.num_classes)
        data = {k: tf.constant(v) for k, v in data.items()}
        base = {}
        for mode in modes:  # the NMS methods of one mode interleaved
          trainers = {nms: bench_train_step.make_trainer(
              backbone, args, jit_of[mode], proposal_nms_method=nms,
              detection_nms_method=nms)[1] for nms in methods}
          timings = common.time_interleaved(
              {nms: (lambda t=trainer: common.to_host(t.step(data)))
               for nms, trainer in trainers.items()}, args.warmup, args.repeats)
          for nms, (warm, times) in timings.items():
            if mode == 'tf_function':
              base[nms] = statistics.median(times)
            records.append(_step_record('train', backbone, mode, nms, args, height, width,
                                        warm, times, base.get(nms)))
          del trainers
  return records


def run(args):
  _check(args)
  matmul = common.start('nms', args)
  records = [common.matmul_record('nms', args, matmul)]
  records += run_stages(args)
  records += run_steps(args)
  return records


def main(argv=None):
  """`common.script_main`: a bad list flag ends with one line (status 2); status 1 when
  nothing was measured."""
  common.script_main(build_parser, run, argv)


if __name__ == '__main__':
  main()
