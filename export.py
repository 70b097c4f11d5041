"""Exports a trained model as a SavedModel for TF Serving.

    python export.py --model_dir=runs/voc --export_dir=exports/voc [--checkpoint=CKPT]
                     [--version=N] [--score_threshold=0.05] [--max_detections=100]

writes exports/voc/N/ (N: one more than the highest version there, or --version, which must
not exist yet). The model structure (backbone, anchors, --min_size / --max_size, ...) comes
from MODEL_DIR/flags.cfg, read before the command line: flags given on the command line
override it (typically --score_threshold and --max_detections; changing structure flags
makes the checkpoint not fit). --checkpoint: a prefix (runs/voc/ckpt-70000, or ckpt-70000
relative to --model_dir) or a folder (runs/voc/best); default the latest in --model_dir.

Signatures (see faster_rcnn_tf/serving/export_module.py and docs/serving.md):
  serving_default  image_bytes string [batch] (JPEG / PNG)
  detect_images    images uint8 [batch, height, width, 3]
both returning detection_boxes (normalized yxyx), detection_scores, detection_classes,
detection_class_names and num_detections.

Exit status: 0 exported, 2 bad flags / run folder / checkpoint (also a damaged one) / version
(nothing written), 1 the export folder cannot be written (one line; nothing left behind).
"""

import sys

from absl import flags
from absl import logging

from faster_rcnn_tf import cli
from faster_rcnn_tf import config_flags
from faster_rcnn_tf.serving import preprocess
from faster_rcnn_tf.serving import run_dir

FLAGS = flags.FLAGS
config_flags.define_data_flags()
config_flags.define_model_flags()
flags.DEFINE_string('model_dir', None, 'Training run folder (flags.cfg, classes.json, '
                    'checkpoints).')
flags.DEFINE_string('checkpoint', None, 'Checkpoint prefix or folder (default: the latest '
                    'in --model_dir).')
flags.DEFINE_string('export_dir', None, 'Model base path: the SavedModel goes to '
                    'EXPORT_DIR/VERSION/.')
flags.DEFINE_integer('version', None, 'Version number (default: one more than the highest '
                     'in --export_dir). Never overwrites.')
flags.DEFINE_integer('max_image_pixels', preprocess.DEFAULT_MAX_IMAGE_PIXELS,
                     'serving_default gives zero detections for encoded images with more '
                     'pixels than this (memory bound).')

PROG = 'export.py'


def main(argv):
  if len(argv) > 1:
    print(f'{PROG}: error: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # TF's INFO lines about saving are noise here.
  from faster_rcnn_tf.serving import exporter
  try:
    path, info = exporter.export_saved_model(
        FLAGS.model_dir, FLAGS.export_dir, FLAGS, checkpoint=FLAGS.checkpoint,
        version=FLAGS.version, max_image_pixels=FLAGS.max_image_pixels)
  except exporter.ExportError as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    return 2
  print(f'Exported {info["checkpoint"]} to {path} (version {info["version"]}; '
        f'{len(info["class_names"])} classes, score threshold {info["score_threshold"]}, '
        f'at most {info["max_detections"]} detections, min_size {info["min_size"]}, '
        f'max_size {info["max_size"]}; head NMS {info["detection_nms_method"]}, '
        f'{info["inference_splits"]} sub-batch(es) per request batch)', flush=True)
  return 0


if __name__ == '__main__':
  cli.run_main(main, PROG, flags_parser=lambda argv: run_dir.parse_argv_with_run_config(
      argv, FLAGS, PROG))
