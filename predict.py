"""Detects objects in image files or folders; writes a JSON of detections and annotated PNGs.

One model source:
  --saved_model=DIR               an export (DIR = BASE/N, or BASE: its highest version)
  --model_dir=DIR [--checkpoint]  a training run (its run_config.json, as in export.py;
                                  model flags given here override it) or a .keras file,
                                  restored in this process
  --server=http://HOST:8501 --model_name=NAME [--model_version=N]   TF Serving REST
  --grpc=HOST:8500 --model_name=NAME [--model_version=N]            TF Serving gRPC

    python predict.py --saved_model=exports/voc --output_dir=out photos/ extra.jpg

Inputs: files (JPEG or PNG; other formats get an "error" record) and folders (their
.jpg / .jpeg / .png files, not recursive, sorted). Outputs in --output_dir:
  detections.json   {"source": ..., "images": [record, ...]} (see
                    faster_rcnn_tf/serving/results.py: boxes in original pixels and
                    normalized, scores, classes, class names, per image)
  NAME.png          each image with its detections scoring >= --min_score drawn

Exit status: 0 done (images that could not be read have an "error" in their record),
1 the model or server failed, 2 bad flags or inputs.
"""

import os
import sys

from faster_rcnn_tf import console

console.quiet_start()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from faster_rcnn_tf import config as config_lib  # noqa: E402
from faster_rcnn_tf import config_flags  # noqa: E402
from faster_rcnn_tf import runs  # noqa: E402

FLAGS = flags.FLAGS
config_flags.define_data_flags()
config_flags.define_model_flags()
flags.DEFINE_string('saved_model', None, 'Exported SavedModel folder (BASE/N or BASE).')
flags.DEFINE_string('model_dir', None, 'Training run folder, to predict from a checkpoint '
                    '(or a .keras file).')
flags.DEFINE_string('checkpoint', None, 'With --model_dir: checkpoint prefix or folder '
                    '(default: the latest).')
flags.DEFINE_string('server', None, 'TF Serving REST address, e.g. http://localhost:8501.')
flags.DEFINE_string('grpc', None, 'TF Serving gRPC address, e.g. localhost:8500.')
flags.DEFINE_string('model_name', None, 'TF Serving model name (--server / --grpc).')
flags.DEFINE_integer('model_version', None, 'TF Serving model version (default: latest).')
flags.DEFINE_string('output_dir', None, 'Where detections.json and the pictures go.')
flags.DEFINE_integer('batch_size', 8, 'Images per request.')
flags.DEFINE_float('min_score', 0.5, 'Detections drawn on the pictures score at least this '
                   '(the JSON has every detection the model returns).')
flags.DEFINE_bool('draw', True, 'Write annotated PNGs.')
flags.DEFINE_float('timeout', 60.0, 'Seconds to wait for a server answer.')

PROG = 'predict.py'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


class UsageError(Exception):
  """Bad flags or inputs: one line, exit status 2."""


def collect_images(paths):
  """Image files named by `paths` (files as given; folders: their image files, sorted)."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      names = sorted(n for n in os.listdir(path)
                     if n.lower().endswith(IMAGE_EXTENSIONS) and
                     os.path.isfile(os.path.join(path, n)))
      if not names:
        logging.warning('%s: no .jpg/.jpeg/.png files', path)
      files.extend(os.path.join(path, n) for n in names)
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise UsageError(f'{path}: no such file or folder')
  if not files:
    raise UsageError('no images to process')
  return files


def _validate():
  sources = [name for name in ('saved_model', 'model_dir', 'server', 'grpc')
             if getattr(FLAGS, name)]
  if len(sources) != 1:
    raise UsageError('give exactly one of --saved_model, --model_dir, --server, --grpc '
                     f'(got {sources or "none"})')
  if sources[0] in ('server', 'grpc') and not FLAGS.model_name:
    raise UsageError(f'--{sources[0]} needs --model_name')
  if not FLAGS.output_dir:
    raise UsageError('--output_dir is required')
  if FLAGS.batch_size <= 0:
    raise UsageError(f'--batch_size must be positive, got {FLAGS.batch_size}')
  return sources[0]


def make_client(source):
  """The detection client for the chosen source (see faster_rcnn_tf/serving/client.py)."""
  from faster_rcnn_tf.serving import client
  if source in ('saved_model', 'model_dir'):
    path = getattr(FLAGS, source)
    try:
      config = None
      folder = runs.find_run_folder(path) if os.path.isdir(path) else None
      if source == 'model_dir' and folder:  # the run's configuration, flags given win
        config = config_lib.RunConfig.from_flags(FLAGS, base=runs.read_run_config(folder))
      if source == 'saved_model' and runs.kind_of(path) != 'saved_model':
        raise runs.RunError(f'{path}: not a SavedModel (no {runs.SAVED_MODEL_FILE} there '
                            'nor in a numeric version folder)')
      loaded = runs.load_model(path, FLAGS.checkpoint, config=config)
    except (runs.RunError, config_lib.ConfigError) as e:
      raise UsageError(f'--{source}={path}: {e}' if path not in str(e) else str(e))
    return client.ModuleClient(loaded.detector(), loaded.description)
  if source == 'server':
    return client.RestClient(FLAGS.server, FLAGS.model_name, FLAGS.model_version,
                             FLAGS.timeout)
  return client.GrpcClient(FLAGS.grpc, FLAGS.model_name, FLAGS.model_version, FLAGS.timeout)


def main(argv):
  console.quiet_loggers()
  try:
    source = _validate()
    files = collect_images(argv[1:])
    detector = make_client(source)
  except UsageError as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    return 2
  from faster_rcnn_tf.serving import client
  from faster_rcnn_tf.serving import results
  try:
    records = results.predict_files(files, detector, FLAGS.output_dir, FLAGS.batch_size,
                                    FLAGS.min_score, FLAGS.draw)
  except client.ServingError as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    return 1
  path = os.path.join(FLAGS.output_dir, results.OUTPUT_JSON)
  results.write_json(path, detector.description, records)
  failed = sum(1 for r in records if r['error'])
  total = sum(r['num_detections'] for r in records)
  print(f'{len(records)} images ({failed} unreadable), {total} detections -> {path}',
        flush=True)
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)),
          flags_parser=lambda argv: config_flags.parse_argv(FLAGS, argv, PROG))
