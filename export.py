"""Exports a trained model as a SavedModel for TF Serving.

    python export.py --model_dir=runs/voc --export_dir=exports/voc [--checkpoint=CKPT]
                     [--version=N] [--score_threshold=0.05] [--max_detections=100]

writes exports/voc/N/ (N: one more than the highest version there, or --version, which must
not exist yet). The model (backbone, anchors, --min_size / --max_size, ...) is the run's,
from MODEL_DIR/run_config.json; flags given on the command line override it (typically
--score_threshold, --max_detections, or --detection_nms_method / --inference_splits for
the serving machine's kind; changing structure flags makes the checkpoint not fit).
--checkpoint: a prefix (runs/voc/ckpt-70000, or ckpt-70000 relative to --model_dir) or a
folder (runs/voc/best); default the latest in --model_dir. --model_dir may also name a
.keras file (model.save).

Signatures (see faster_rcnn_tf/serving/export_module.py and docs/serving.md):
  serving_default  image_bytes string [batch] (JPEG / PNG)
  detect_images    images uint8 [batch, height, width, 3]
both returning detection_boxes (normalized yxyx), detection_scores, detection_classes,
detection_class_names and num_detections.

Exit status: 0 exported, 2 bad flags / run folder / checkpoint / version (nothing written).
"""

import os
import sys

from faster_rcnn_tf import console

console.quiet_start()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from faster_rcnn_tf import config as config_lib  # noqa: E402
from faster_rcnn_tf import config_flags  # noqa: E402
from faster_rcnn_tf import runs  # noqa: E402
from faster_rcnn_tf.serving import preprocess  # noqa: E402

FLAGS = flags.FLAGS
config_flags.define_data_flags()
config_flags.define_model_flags()
flags.DEFINE_string('model_dir', None, 'Training run folder (run_config.json, '
                    'checkpoints), or a .keras file.')
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
  console.quiet_loggers()
  from faster_rcnn_tf.serving import exporter
  try:
    config = None
    folder = runs.find_run_folder(FLAGS.model_dir) if FLAGS.model_dir and os.path.isdir(
        FLAGS.model_dir) else None
    if folder:  # the run's configuration, with the flags given here overriding it
      config = config_lib.RunConfig.from_flags(FLAGS, base=runs.read_run_config(folder))
    path, info = exporter.export_saved_model(
        FLAGS.model_dir, FLAGS.export_dir, checkpoint=FLAGS.checkpoint, config=config,
        version=FLAGS.version, max_image_pixels=FLAGS.max_image_pixels)
  except (exporter.ExportError, runs.RunError, config_lib.ConfigError) as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    return 2
  print(f'Exported {info["checkpoint"]} to {path} (version {info["version"]}; '
        f'{len(info["class_names"])} classes, score threshold {info["score_threshold"]}, '
        f'at most {info["max_detections"]} detections, min_size {info["min_size"]}, '
        f'max_size {info["max_size"]}; head NMS {info["detection_nms_method"]}, '
        f'{info["inference_splits"]} sub-batch(es) per request batch)', flush=True)
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)),
          flags_parser=lambda argv: config_flags.parse_argv(FLAGS, argv, PROG))
