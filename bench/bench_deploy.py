"""Deployment runtimes side by side: latency and VOC07 mAP@0.5 of one trained model through
the SavedModel (TensorFlow), LiteRT float32 / float16 / dynamic-range int8 (XNNPACK) and
ONNX Runtime, at each letterbox size, in one run.

    python bench/bench_deploy.py --model_dir=runs/shapes_mobilenet_v2 [--sizes=320,600]
        [--runtimes=saved_model,tflite_none,tflite_float16,tflite_dynamic,onnx]
        [--eval_images=200] [--repeats=20] [--warmup=3] [--threads=2]

--model_dir is a train.py run on the shapes data (configs/shapes_mobilenet_v2.cfg is the
MobileNetV2 one); its run_config.json gives the model and the test split (image size,
count, seed). Every runtime runs the same graph shape: one uint8 image letterboxed into
SIZE x SIZE (`serving/portable.py`); the SavedModel is that detector as TensorFlow runs
it (CropAndResize, TF's NMS kernel), the others are the files export.py writes.

Latency: one test image per call (batch 1), the runtimes taking turns call by call
(`common.time_interleaved`) so that a noisy stretch of the machine hits them alike.
mAP: VOC07 11-point AP at IoU 0.5 over the first --eval_images images of the shapes test
split, each image through each runtime.

Prints one JSON line per size and runtime:
  {"bench": "deploy", "runtime", "size", "threads", "sec_per_image_median",
   "sec_per_image_min", "sec_per_image_max", "images_per_s", "speedup_over_saved_model",
   "map_voc07", "map_change_vs_tflite_none", "file_mb", "eval_images", ...}
"""

import argparse
import os
import sys
import tempfile

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # pylint: disable=wrong-import-position

RUNTIMES = ('saved_model', 'tflite_none', 'tflite_float16', 'tflite_dynamic', 'onnx')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model_dir', required=True, help='A train.py run folder (shapes).')
  parser.add_argument('--checkpoint', default=None, help='Checkpoint (default: latest).')
  parser.add_argument('--sizes', default='320,600',
                      help='Letterbox sizes, S or HxW, comma-separated.')
  parser.add_argument('--runtimes', default=','.join(RUNTIMES),
                      help=f'Comma-separated subset of {",".join(RUNTIMES)}.')
  parser.add_argument('--eval_images', type=int, default=200,
                      help='Shapes test images the mAP is computed on (0: latency only).')
  parser.add_argument('--score_threshold', type=float, default=None,
                      help='Overrides the run\'s --score_threshold (default: its own).')
  parser.add_argument('--threads', type=int, default=common.DEFAULT_THREADS,
                      help='CPU threads of every runtime (TF pools, XNNPACK, ORT intra-op).')
  parser.add_argument('--repeats', type=int, default=20, help='Timed calls per runtime.')
  parser.add_argument('--warmup', type=int, default=3, help='Untimed calls first.')
  return parser


def load_run(args):
  """(model, class names, shapes test source) of --model_dir (`runs.load_model`, with
  --score_threshold overriding the run's)."""
  import dataclasses
  from faster_rcnn_tf import config as config_lib
  from faster_rcnn_tf import runs
  from faster_rcnn_tf.data import registry
  config = runs.read_run_config(args.model_dir)
  if args.score_threshold is not None:
    config = config.replace(model=dataclasses.replace(
        config.model, score_threshold=args.score_threshold))
  loaded = runs.load_model(args.model_dir, args.checkpoint, config=config)
  data = config.data
  source = registry.get_source(data.dataset, data.eval_split,
                               classes=list(loaded.class_names), seed=config.train.seed,
                               **config_lib.source_kwargs(data))
  return loaded.model, list(loaded.class_names), source


def make_runtimes(model, names, size, wanted, threads, folder):
  """{runtime: (run(uint8 [1, H, W, 3]) -> outputs dict of numpy, file size MB or None)}."""
  import numpy as np
  import tensorflow as tf
  from faster_rcnn_tf.serving import portable
  from faster_rcnn_tf.serving import portable_clients
  from faster_rcnn_tf.serving import portable_export
  made = {}
  detector = portable.LetterboxDetector(model, names, size)
  if 'saved_model' in wanted:
    reference = portable.LetterboxDetector(model, names, size, portable=False)
    path = os.path.join(folder, f'saved_model_{size[0]}x{size[1]}')
    tf.saved_model.save(reference, path, signatures={
        'detect_images': reference.detect.get_concrete_function()})
    fn = tf.saved_model.load(path).signatures['detect_images']
    made['saved_model'] = (
        lambda pixels, fn=fn: {k: v.numpy() for k, v in fn(images=tf.constant(pixels)).items()},
        None)
  for runtime in wanted:
    if runtime == 'saved_model':
      continue
    fmt, _, quantization = runtime.partition('_')
    info = portable_export.export_info(detector, fmt, quantization or 'none', None)
    data = portable_export.convert_detector(detector, fmt, info, quantization or 'none')
    path = os.path.join(folder, portable_export.file_name(fmt, size, quantization or 'none'))
    with open(path, 'wb') as f:
      f.write(data)
    client = (portable_clients.TFLiteClient(path, threads) if fmt == 'tflite' else
              portable_clients.OnnxClient(path, threads))
    made[runtime] = (lambda pixels, c=client: {k: np.asarray(v) for k, v in c.run(pixels).items()},
                     len(data) / 2 ** 20)
  return made


def voc07_map(run, source, num_images, num_classes):
  """VOC07 mAP@0.5 of run() over the first num_images records of source."""
  from faster_rcnn_tf.evaluation import voc_metrics
  gt, detections = {}, []
  for i, record in enumerate(source.records()):
    if i >= num_images:
      break
    image_id = int(record['image_id'])
    gt[image_id] = {'boxes': record['boxes'], 'classes': record['classes'],
                    'difficult': record['difficult']}
    out = run(record['image'][None])
    h, w = record['image'].shape[:2]
    n = int(out['num_detections'][0])
    for box, score, cls in zip(out['detection_boxes'][0, :n] * [h, w, h, w],
                               out['detection_scores'][0, :n],
                               out['detection_classes'][0, :n]):
      detections.append((image_id, int(cls), float(score), box))
  return float(voc_metrics.evaluate_voc(gt, detections, num_classes, 0.5,
                                        use_07_metric=True)['map'])


def run(args):
  common.apply_tf_threads(args.threads)
  from faster_rcnn_tf.serving import portable
  wanted = common.parse_list(args.runtimes)
  unknown = [r for r in wanted if r not in RUNTIMES]
  if unknown:
    raise ValueError(f'--runtimes: unknown {unknown}; choose from '
                     f'{",".join(RUNTIMES)}')
  sizes = [portable.parse_size(s, '--sizes') for s in common.parse_list(args.sizes)]
  model, names, source = load_run(args)
  common.note('figures are only comparable within one run (runtimes interleaved)')
  first = next(iter(source.records()))['image'][None]
  records = []
  with tempfile.TemporaryDirectory() as folder:
    for size in sizes:
      runtimes = make_runtimes(model, names, size, wanted, args.threads, folder)
      timings = common.time_interleaved(
          {name: (lambda fn=fn: fn(first)) for name, (fn, _) in runtimes.items()},
          args.warmup, args.repeats)
      maps = {name: (voc07_map(fn, source, args.eval_images, len(names))
                     if args.eval_images else None) for name, (fn, _) in runtimes.items()}
      base = None
      if 'saved_model' in timings:
        base = common.timing_fields(timings['saved_model'][1], 1)['sec_per_image_median']
      for name, (warm, times) in timings.items():
        fields = common.timing_fields(times, 1, warm)
        record = {'bench': 'deploy', 'runtime': name, 'size': f'{size[0]}x{size[1]}',
                  'backbone': model.backbone_name, 'threads': args.threads, **fields,
                  'speedup_over_saved_model': (
                      round(base / fields['sec_per_image_median'], 3) if base else None),
                  'map_voc07': None if maps[name] is None else round(maps[name], 4),
                  'map_change_vs_tflite_none': (
                      round(maps[name] - maps['tflite_none'], 4)
                      if maps[name] is not None and maps.get('tflite_none') is not None
                      else None),
                  'file_mb': None if runtimes[name][1] is None else round(runtimes[name][1], 2),
                  'eval_images': min(args.eval_images, len(source))}
        records.append(common.emit(record))
  return records


if __name__ == '__main__':
  sys.exit(common.script_main(build_parser, run))
