"""Exports a random-weight FasterRCNN as a SavedModel, to time the SavedModel path.

    python bench/export_random.py --backbone=vgg16 --export_dir=/tmp/bench_export
        [--min_size=600] [--max_size=1000] [--version=N] [--inference_splits=auto|N]

Writes EXPORT_DIR/N/ (N: one more than the highest there) with the same signatures as
export.py (`faster_rcnn_tf.serving.export_module.DetectionModule`: serving_default and
detect_images uint8 [B, H, W, 3]) plus bench_info.json (the model's keyword arguments,
which bench_inference.py reads to count the FLOPs). No training run or checkpoint needed:
the weights are random (backbone_weights=None), 20 VOC classes, model defaults.
Then: python bench/bench_inference.py --modes=saved_model --saved_model=EXPORT_DIR ...
"""

import argparse
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

BENCH_INFO = 'bench_info.json'
VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backbone', default='vgg16')
  parser.add_argument('--export_dir', required=True, help='Base path: writes EXPORT_DIR/N/.')
  parser.add_argument('--version', type=int, default=None)
  parser.add_argument('--min_size', type=int, default=600)
  parser.add_argument('--max_size', type=int, default=1000)
  parser.add_argument('--num_rois', type=int, default=300, help='test_post_nms_topk.')
  parser.add_argument('--inference_splits', default='auto',
                      help='FasterRCNN inference_splits: sub-batches each request batch '
                      "runs as at once ('auto': 2 when exported on a CPU machine).")
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--threads', type=int, default=common.DEFAULT_THREADS)
  return parser


def export(args):
  """Returns the version folder written."""
  import tensorflow as tf
  from faster_rcnn_tf.serving import export_module
  from faster_rcnn_tf.serving import exporter
  base = os.path.abspath(args.export_dir)
  try:
    version = exporter.choose_version(base, args.version)
  except exporter.ExportError as e:
    raise ValueError(f'{e}; nothing written') from None
  path = os.path.join(base, str(version))
  kwargs = dict(num_classes=len(VOC_CLASSES), backbone=args.backbone,
                test_post_nms_topk=args.num_rois, inference_splits=args.inference_splits)
  model = common.build_model(args.backbone, len(VOC_CLASSES), args.seed,
                             test_post_nms_topk=args.num_rois,
                             inference_splits=args.inference_splits)
  module = export_module.DetectionModule(model, VOC_CLASSES, args.min_size, args.max_size)
  tf.saved_model.save(module, path, signatures=module.signatures())
  info = {'model_kwargs': kwargs, 'min_size': args.min_size, 'max_size': args.max_size,
          'pad_multiple': getattr(module, '_pad_multiple', 32),
          'weights': 'random', 'seed': args.seed}
  with open(os.path.join(path, BENCH_INFO), 'w') as f:
    json.dump(info, f, indent=1)
  return path


def main(argv=None):
  args = build_parser().parse_args(argv)
  common.apply_tf_threads(args.threads)
  print(export(args), flush=True)


if __name__ == '__main__':
  common.configure_threads_from_argv()
  main()
