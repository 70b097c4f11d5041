"""Inference speed: seconds per image of FasterRCNN.detect, per backbone, size and batch.

    python bench/bench_inference.py [--backbones=vgg16,resnet50,mobilenet_v2,tiny]
        [--sizes=600x800,600x1000] [--batches=1,8] [--modes=tf_function,xla,saved_model]
        [--saved_model=EXPORT_DIR] [--saved_model_backbone=vgg16]
        [--fold_batch_norm=on|off|both] [--precision=float32|mixed_float16|mixed_bfloat16]
        [--compare_precisions=mixed_bfloat16,...]
        [--nms_methods=auto|kernel|tiled|batched,...] [--inference_splits=auto|N,...]
        [--repeats=5] [--warmup=1] [--threads=2]

Modes:
  tf_function  tf.function(model.detect) on float32 images (random weights, 20 classes);
  xla          the same with jit_compile=True;
  saved_model  the `detect_images` signature (uint8 [B, H, W, 3]) of an exported
               SavedModel: --saved_model=BASE/N (or BASE: its highest numbered version);
               several, comma-separated, are timed interleaved (lines after the first
               path's carry speedup_over_first_saved_model).
               Skipped, with a note on stderr, when no --saved_model is given.

The batch sizes (and the models of --fold_batch_norm=both, several --nms_methods,
--inference_splits or --compare_precisions) of one mode and size are timed interleaved,
call by call, so that their ratios (throughput_over_batch_1, speedup_over_unfolded,
speedup_over_first_nms_method, speedup_over_first_inference_splits,
speedup_over_first_precision) come from the same stretches of a noisy machine.

Prints one JSON line per measurement (after a first line with this run's matmul roofline):
  {"bench": "inference", "config", "backbone", "mode", "height", "width", "batch",
   "threads", "sec_per_image_median", "sec_per_image_min", "sec_per_image_max",
   "images_per_s", "gflop_per_image", "achieved_gflops", "matmul_gflops",
   "roofline_fraction", "bound_sec_per_image", "bound_fraction", "first_call_s",
   "fold_batch_norm", ...}
FLOPs: see bench/flops.py (RoI head counted on test_post_nms_topk RoIs per image).
bound_sec_per_image: the roofline model's time (flops.roofline_bound_seconds: per layer
the slower of its FLOPs at the matmul rate and its bytes at this run's memory bandwidth,
measured on the first line); bound_fraction = bound / measured. For memory-bound models
(MobileNetV2) this is the meaningful limit: the matmul fraction alone understates them.
"""

import argparse
import json
import os
import statistics
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

MODES = ('tf_function', 'xla_backbone', 'xla', 'saved_model')


def _detect_with_compiled_backbone(model):
  """tf.function of model.detect traced with the backbone XLA-compiled (the model's
  `compile_backbone` option) and the rest not."""
  import tensorflow as tf

  def detect(images, image_sizes):
    previous = model.compile_backbone
    model.compile_backbone = True
    try:
      return model.detect(images, image_sizes)
    finally:
      model.compile_backbone = previous
  return tf.function(detect)


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backbones', default='vgg16,resnet50,mobilenet_v2,tiny')
  parser.add_argument('--sizes', default='600x800,600x1000', help='HxW list.')
  parser.add_argument('--batches', default='1,8')
  parser.add_argument('--modes', default=','.join(MODES), help=f'Any of {MODES}.')
  parser.add_argument('--num_rois', type=int, default=300,
                      help='test_post_nms_topk: RoIs per image through the head.')
  common.add_fold_batch_norm_arg(
      parser, 'timed interleaved; the folded lines carry speedup_over_unfolded')
  parser.add_argument('--nms_methods', default='auto',
                      help="The detection head's NMS (FasterRCNN detection_nms_method): "
                      'auto, kernel, tiled, batched; several, comma-separated, are timed '
                      'interleaved (speedup_over_first_nms_method).')
  parser.add_argument('--inference_splits', default='auto',
                      help='FasterRCNN inference_splits: the batch run as this many '
                      "sub-batches at once ('auto': 2 on CPUs, 1 on GPUs and TPUs); "
                      'several, comma-separated, are timed interleaved '
                      '(speedup_over_first_inference_splits).')
  parser.add_argument('--compare_precisions', default='',
                      help='More Keras dtype policies (mixed_float16, mixed_bfloat16, '
                      'float32), each a model of its own timed interleaved with the '
                      "--precision one (speedup_over_first_precision), each against its "
                      "compute dtype's matmul (an extra roofline line each).")
  parser.add_argument('--saved_model', default='',
                      help='Exported SavedModel (BASE/N, or BASE for its latest N); a '
                      'comma-separated list compares several, timed interleaved.')
  parser.add_argument('--saved_model_backbone', default='',
                      help="The exported model's backbone (for its FLOPs; optional).")
  common.add_common_args(parser, repeats=5, warmup=1)
  return parser


def resolve_saved_model(path):
  """BASE/N as given, or BASE -> its highest numbered version folder (`runs`' lookup)."""
  from faster_rcnn_tf import runs
  try:
    return runs.resolve_saved_model(path)
  except runs.RunError as e:
    raise ValueError(f'--saved_model={e}') from None


def _run_model_kwargs(model_dir):
  """FasterRCNN kwargs of a training run folder's configuration, or None when the
  folder is gone or unreadable."""
  from faster_rcnn_tf import config as config_lib
  from faster_rcnn_tf import runs
  try:
    config = runs.read_run_config(model_dir)
  except runs.RunError:
    return None
  # Random weights; the structure only (the backbone's XLA compilation changes speed).
  kwargs = config_lib.model_kwargs(config, pretrained=False, serving=True)
  kwargs.pop('backbone_weights')
  return kwargs


def saved_model_structure(path, backbone_override=''):
  """What the exported model computes, for its FLOP count, or None when unknown.

  Reads PATH/bench_info.json (bench/export_random.py) or PATH/export_info.json
  (export.py; the structure then comes from the training run's configuration when the
  run folder is still there). Returns (FasterRCNN kwargs, min_size, max_size, pad_multiple).
  """
  bench_info = os.path.join(path, 'bench_info.json')
  export_info = os.path.join(path, 'export_info.json')
  if os.path.exists(bench_info):
    with open(bench_info) as f:
      info = json.load(f)
    kwargs = dict(info['model_kwargs'])
  elif os.path.exists(export_info):
    with open(export_info) as f:
      info = json.load(f)
    kwargs = {'num_classes': len(info['class_names']), 'backbone': info['backbone']}
    run_kwargs = _run_model_kwargs(info.get('model_dir', ''))
    if run_kwargs is not None:
      kwargs = dict(run_kwargs, backbone=info['backbone'])
  else:
    if not backbone_override:
      return None
    info = {'min_size': 600, 'max_size': 1000, 'pad_multiple': 32}
    kwargs = {'num_classes': common.NUM_CLASSES}
  if backbone_override:
    kwargs['backbone'] = backbone_override
  return kwargs, info['min_size'], info['max_size'], info.get('pad_multiple', 1)


def processed_size(height, width, min_size, max_size, pad_multiple):
  """The padded size the exported model's network sees for an input of height x width
  (serving.preprocess: scale = min(min_size / short side, max_size / long side), round,
  pad up to a multiple of pad_multiple)."""
  import numpy as np
  scale = np.float32(min(min_size / min(height, width), max_size / max(height, width)))
  h = max(int(np.round(np.float32(height) * scale)), 1)
  w = max(int(np.round(np.float32(width) * scale)), 1)
  pad = max(int(pad_multiple), 1)
  return -(-h // pad) * pad, -(-w // pad) * pad


def saved_model_caller(path):
  """fn(uint8 images [B, H, W, 3]) -> host outputs, through the export's 'detect_images'
  signature (loaded by `runs.load_model`, which checks it)."""
  from faster_rcnn_tf import runs
  try:
    loaded = runs.load_model(path)
  except runs.RunError as e:
    raise ValueError(str(e)) from None
  if loaded.kind != 'saved_model':
    raise ValueError(f'--saved_model={path}: not a SavedModel')
  detector = loaded.detector()

  def call(images):
    return common.to_host(detector.serve_images(images))
  call.loaded = loaded  # keeps the loaded object alive
  return call


def _record(args, backbone, mode, height, width, batch, warm, times, flop, matmul,
            extra=None, bound=None):
  fields = common.timing_fields(times, batch, warm)
  rec = {'bench': 'inference',
         'config': f'{backbone}/voc{args.num_classes}/rois{args.num_rois}',
         'backbone': backbone or None, 'mode': mode, 'height': height, 'width': width,
         'batch': batch, 'num_rois': args.num_rois, 'precision': common.precision()}
  rec.update(common.thread_info(args.threads))
  rec.update(fields)
  rec.update(common.roofline_fields(flop['total'] if flop else None,
                                    fields['sec_per_image_median'], matmul))
  rec.update(common.bound_fields(bound and bound['total'], fields['sec_per_image_median']))
  if flop:
    rec['gflop_parts'] = {k: common._round(v['forward'] / 1e9, 5)  # pylint: disable=protected-access
                          for k, v in flop['parts'].items()}
  if backbone:
    rec.update(common.reference_fields(mode, backbone, height, width,
                                       fields['sec_per_image_median']))
  rec['load_avg'] = common.host_fields()['load_avg']
  rec.update(extra or {})
  return common.emit(rec)


def _error(args, backbone, mode, height, width, batch, exc):
  return common.emit({'bench': 'inference', 'backbone': backbone, 'mode': mode,
                      'height': height, 'width': width, 'batch': batch,
                      'threads': args.threads,
                      'error': f'{type(exc).__name__}: {str(exc)[:500]}'})


def _saved_model_under_test(path, backbone_override, seed):
  """(caller, FLOP model or None, (min_size, max_size, pad_multiple) or None)."""
  call = saved_model_caller(path)
  structure = saved_model_structure(path, backbone_override)
  if not structure:
    common.note(f'{path}: no bench_info.json / export_info.json and no '
                '--saved_model_backbone: FLOPs and roofline fraction left out')
    return call, None, None
  kwargs, min_size, max_size, pad_multiple = structure
  kwargs = dict(kwargs)
  flop_model = common.build_model(kwargs.pop('backbone'), kwargs.pop('num_classes'), seed,
                                  **kwargs)
  return call, flop_model, (min_size, max_size, pad_multiple)


def _run_saved_models(args, sizes, batches, matmul, records):
  """saved_model mode: every --saved_model path and batch timed interleaved per size."""
  import tensorflow as tf
  from bench import flops as flops_lib
  paths = [resolve_saved_model(p) for p in common.parse_list(args.saved_model)]
  models = {path: _saved_model_under_test(path, args.saved_model_backbone, args.seed)
            for path in paths}
  for height, width in sizes:
    inputs = {batch: tf.constant(common.random_images(batch, height, width, args.seed)[0]
                                 .astype('uint8')) for batch in batches}
    calls = {(path, batch): (lambda c=models[path][0], x=inputs[batch]: c(x))
             for path in paths for batch in batches}
    try:
      timings = common.time_interleaved(calls, args.warmup, args.repeats)
    except Exception as e:  # pylint: disable=broad-except
      records.extend(_error(args, None, 'saved_model', height, width, batch, e)
                     for batch in batches)
      continue
    per_image = {key: statistics.median(times) / key[1]
                 for key, (_, times) in timings.items()}
    for (path, batch), (warm, times) in timings.items():
      _, flop_model, sizing = models[path]
      flop = seen = bound = None
      if flop_model:
        seen = processed_size(height, width, *sizing)
        flop = flops_lib.model_flops(flop_model, seen[0], seen[1])
        bound = flops_lib.roofline_bound_seconds(flop_model, seen[0], seen[1], batch,
                                                 matmul['matmul_gflops'],
                                                 matmul.get('bandwidth_gbs'),
                                                 activation_bytes=common.activation_bytes())
      backbone = flop_model.backbone_name if flop_model else ''
      extra = {'config': f'saved_model/{backbone or "unknown"}',
               'num_rois': (flop_model.proposal_layer.test_post_nms_topk
                            if flop_model else None),
               'saved_model': path,
               'network_input_size': list(seen) if seen else None}
      if batch != 1 and (path, 1) in per_image:
        extra['throughput_over_batch_1'] = round(
            per_image[(path, 1)] / per_image[(path, batch)], 4)
      if path != paths[0]:
        extra['speedup_over_first_saved_model'] = round(
            per_image[(paths[0], batch)] / per_image[(path, batch)], 4)
      records.append(_record(args, backbone, 'saved_model', height, width, batch, warm,
                             times, flop, matmul, extra=extra, bound=bound))


def run(args):
  """Runs every measurement; returns the list of records (each also printed)."""
  import keras
  import tensorflow as tf
  from bench import flops as flops_lib

  modes = common.parse_list(args.modes)
  for m in modes:
    if m not in MODES:
      raise ValueError(f'--modes: unknown mode {m!r}; choose from {MODES}')
  from faster_rcnn_tf import batch_splitting
  from faster_rcnn_tf import config_flags
  from faster_rcnn_tf.layers import detection_generator
  for value in common.parse_list(args.inference_splits):
    try:
      batch_splitting.resolve_splits(value)
    except ValueError as e:
      raise ValueError(f'--inference_splits: {e}') from None
  for flag, values, allowed in (
      ('--nms_methods', args.nms_methods, detection_generator.NMS_METHODS),
      ('--compare_precisions', args.compare_precisions, config_flags.PRECISIONS)):
    for value in common.parse_list(values):
      if value not in allowed:
        raise ValueError(f'{flag}: unknown value {value!r}; choose from {allowed}')
  sizes = common.parse_sizes(args.sizes)
  batches = common.parse_ints(args.batches)
  matmul = common.start('inference', args)
  records = [common.matmul_record('inference', args, matmul)]

  nms_methods = common.parse_list(args.nms_methods)
  main_precision = common.precision()
  precisions = [main_precision] + [p for p in common.parse_list(args.compare_precisions)
                                   if p != main_precision]
  matmuls = {main_precision: matmul}
  for policy in precisions[1:]:  # each precision's roofline in its compute dtype
    dtype = keras.mixed_precision.Policy(policy).compute_dtype
    matmuls[policy] = dict(matmul, **common.measure_matmul(
        args.matmul_size, args.matmul_repeats, args.seed, dtype))
    records.append(common.emit(dict(common.matmul_record('inference', args, matmuls[policy]),
                                    precision=policy)))
  splits_values = common.parse_list(args.inference_splits)
  variants = [(fold, nms, splits, policy)
              for fold in common.fold_variants(args.fold_batch_norm)
              for nms in nms_methods for splits in splits_values for policy in precisions]
  # Each variant's speedup is reported against the variant differing only in one place:
  # (field, index in the variant, the baseline value there).
  baselines = (('speedup_over_unfolded', 0, False),
               ('speedup_over_first_nms_method', 1, nms_methods[0]),
               ('speedup_over_first_inference_splits', 2, splits_values[0]),
               ('speedup_over_first_precision', 3, main_precision))
  for backbone in common.parse_list(args.backbones):
    model_modes = [m for m in modes if m != 'saved_model']
    if not model_modes:
      break
    models = {(fold, nms, splits, policy): common.build_model_under(
        policy, backbone, args.num_classes, args.seed, test_post_nms_topk=args.num_rois,
        fold_batch_norm=fold, detection_nms_method=nms, inference_splits=splits)
              for fold, nms, splits, policy in variants}
    fns = {variant: {'tf_function': tf.function(model.detect),
                     'xla_backbone': _detect_with_compiled_backbone(model),
                     'xla': tf.function(model.detect, jit_compile=True)}
           for variant, model in models.items()}
    for height, width in sizes:
      flop = flops_lib.model_flops(models[variants[0]], height, width, training=False)
      inputs = {}
      for batch in batches:
        images, image_sizes = common.random_images(batch, height, width, args.seed)
        inputs[batch] = (tf.constant(images), tf.constant(image_sizes))
      bounds = {(batch, policy): flops_lib.roofline_bound_seconds(
          models[variants[0]], height, width, batch, matmuls[policy]['matmul_gflops'],
          matmul.get('bandwidth_gbs'), activation_bytes=common.activation_bytes(policy))
          for batch in batches for policy in precisions}
      for mode in model_modes:
        # At batch 1 every --inference_splits value runs the same graph: timed once.
        calls = {(batch,) + variant: (lambda fn=fns[variant][mode], x=inputs[batch]:
                                      common.to_host(fn(*x)))
                 for batch in batches for variant in variants
                 if batch != 1 or variant[2] == splits_values[0]}
        try:  # interleaved: batches and variants share the machine's noisy stretches
          timings = common.time_interleaved(calls, args.warmup, args.repeats)
        except Exception as e:  # pylint: disable=broad-except
          records.extend(_error(args, backbone, mode, height, width, batch, e)
                         for batch in batches)
          continue
        per_image = {key: statistics.median(times) / key[0]
                     for key, (_, times) in timings.items()}
        for (batch, *variant), (warm, times) in timings.items():
          variant = tuple(variant)
          fold, nms, splits, policy = variant
          extra = {'fold_batch_norm': fold, 'nms_method': nms, 'inference_splits': splits,
                   'sub_batches': min(batch, batch_splitting.resolve_splits(splits)),
                   'precision': policy}
          for field, index, baseline in baselines:
            other = (batch,) + variant[:index] + (baseline,) + variant[index + 1:]
            if variant[index] != baseline and other in per_image:
              extra[field] = round(per_image[other] / per_image[(batch,) + variant], 4)
          batch_1 = (1,) + variant[:2] + (splits_values[0],) + variant[3:]
          if batch != 1 and batch_1 in per_image:
            extra['throughput_over_batch_1'] = round(
                per_image[batch_1] / per_image[(batch,) + variant], 4)
          records.append(_record(args, backbone, mode, height, width, batch, warm,
                                 times, flop, matmuls[policy], extra=extra,
                                 bound=bounds[(batch, policy)]))
    del models, fns

  if 'saved_model' in modes:
    if not args.saved_model:
      common.note('saved_model mode skipped: no --saved_model=EXPORT_DIR given')
    else:
      _run_saved_models(args, sizes, batches, matmul, records)
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
