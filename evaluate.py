"""Evaluates a Faster R-CNN on a dataset split: VOC07 / VOC / COCO metrics and a report.

Usage:
    python evaluate.py --model_dir=runs/shapes_quickstart           # latest checkpoint
    python evaluate.py --flagfile=configs/vgg16_voc07.cfg --metric=voc07,coco \\
        --output_dir=runs/vgg16_voc07/eval_test
    python evaluate.py --model_dir=DIR --checkpoint=best             # or ckpt-5000
    python evaluate.py --saved_model=EXPORT_DIR --flagfile=configs/X.cfg
    python evaluate.py --detections=dets.json --dataset=voc:data/VOC2007 --eval_split=test

What is evaluated (exactly one of):
  --model_dir / --checkpoint   a train.py checkpoint (the latest in --model_dir, or
                               --checkpoint=PREFIX or a folder), run in a tf.function on
                               batches of --eval_split;
  --saved_model=DIR            an export.py SavedModel's 'detect_images' signature;
  --detections=FILE.json       an existing detections file in COCO results format, scored
                               without running any model.

Flags: the dataset and model flags are the training ones. With --model_dir (or
--checkpoint) the run's run_config.json supplies them and the class list; flags given on
the command line (or in a --flagfile there) override the run's values.
--flagfile=configs/X.cfg works too (training-only flags in it are ignored).

Detections files (--detections, and detections.json written here) are COCO results:
    [{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}, ...]
with bbox in pixels of the original image (x = xmin, y = ymin, continuous coordinates,
the image's top-left corner is 0, 0). Ids are the dataset source's:
  voc:DIR     image_id = 0-based index of the image's line among the non-blank lines of
              DIR/ImageSets/Main/<split>.txt (split 'all': index in the sorted list of
              Annotations/*.xml); category_id = 1-based index of the class in the class
              list (sorted object names of all annotations, or --classes / the run's class list);
  coco:FILE   the json's own image ids and category ids;
  shapes      image_id = index of the generated image; category_id 1 circle, 2 square,
              3 triangle;
  tfds:NAME   image_id: see faster_rcnn_tf/data/tfds_source.py; category_id = 1-based
              position in the class list (the tfds label + 1 by default).
Unknown image or category ids, malformed boxes or scores are errors.

Metrics (--metric, comma-separated; default voc07): voc07 (11-point AP@0.5), voc (area
AP@0.5), coco (pycocotools COCOeval; on coco: datasets against the json's own annotations).
Ground truth comes from the source's records in original pixels (every object, difficult
ones flagged), the same as train.py's end-of-training evaluation, so the numbers agree.

Output: the per-class table on the console; with --output_dir, written only after
everything has been computed, all at once (nothing is written on an error):
    metrics.json        every metric, per class, metric names, split, checkpoint step
    detections.json     the detections in COCO results format
    pr_curves/*.png     one precision-recall curve per class (VOC matching at IoU 0.5)
    samples/*.png       --num_sample_images images with ground truth and predictions
Bad input (flags, files, a checkpoint that does not fit the model) prints one line naming
it and exits with status 2. The console shows progress and results; --verbosity=0 brings
back TensorFlow's log lines.
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
from faster_rcnn_tf.evaluation.errors import EvaluationError  # noqa: E402

FLAGS = flags.FLAGS
config_flags.define_data_flags()
config_flags.define_model_flags()
flags.DEFINE_integer('seed', 0, 'Seed of the generated shapes data (as in training).')
flags.DEFINE_integer('eval_batch_size', 4, 'Images per evaluation batch.')
flags.DEFINE_bool('mixed_precision', False, 'Shorthand for --precision=mixed_float16.')

flags.DEFINE_string('model_dir', None, 'A train.py run folder: its latest checkpoint is '
                    'evaluated, its run_config.json describes the model and data.')
flags.DEFINE_string('checkpoint', None, 'A checkpoint prefix (MODEL_DIR/ckpt-N) or a folder '
                    '(its latest; e.g. MODEL_DIR/best), also relative to --model_dir, to '
                    'evaluate instead of the latest in --model_dir.')
flags.DEFINE_string('saved_model', None, "An export.py SavedModel folder ('detect_images' "
                    'signature) to evaluate instead of a checkpoint.')
flags.DEFINE_string('detections', None, 'Score this COCO-results JSON file instead of '
                    'running a model (ids: see the module docstring).')
flags.DEFINE_list('metric', ['voc07'], 'Metrics, comma-separated: voc07, voc, coco.')
flags.DEFINE_string('output_dir', None, 'Write metrics.json, detections.json, PR curves and '
                    'sample pictures here.')
flags.DEFINE_integer('max_eval_images', 0, 'Evaluate the first N images of the split '
                     '(0: all).')
flags.DEFINE_integer('num_sample_images', 8, 'Pictures of evaluated images in --output_dir.')
flags.DEFINE_float('sample_score_threshold', 0.5, 'Predictions drawn in the pictures score '
                   'at least this.')

PROG = 'evaluate.py'


def _flags_parser(argv):
  """absl flags parser: flagfiles may hold training flags (skipped); see config_flags."""
  positional = config_flags.parse_argv(FLAGS, argv, PROG)
  if len(positional) > 1:
    print(f'{PROG}: error: unexpected arguments {positional[1:]}', file=sys.stderr)
    sys.exit(2)
  return positional[:1]


def _check_flags():
  """Validates flag combinations; returns (mode, metric names)."""
  from faster_rcnn_tf.evaluation import scoring
  from faster_rcnn_tf.evaluation import staging
  metrics = scoring.parse_metrics(FLAGS.metric)
  if FLAGS.detections:
    mode = 'detections'
    for name in ('checkpoint', 'saved_model'):
      if FLAGS[name].value:
        raise EvaluationError(f'--detections and --{name} exclude each other: a detections '
                              'file is scored without running a model')
  elif FLAGS.saved_model:
    mode = 'saved_model'
    if FLAGS.checkpoint:
      raise EvaluationError('--saved_model and --checkpoint exclude each other')
    if not os.path.isdir(FLAGS.saved_model):
      raise EvaluationError(f'--saved_model={FLAGS.saved_model}: no such folder')
  elif FLAGS.model_dir or FLAGS.checkpoint:
    mode = 'checkpoint'
  else:
    raise EvaluationError('nothing to evaluate: give --model_dir (or --checkpoint), '
                          '--saved_model or --detections')
  if FLAGS.model_dir and not os.path.isdir(FLAGS.model_dir):
    raise EvaluationError(f'--model_dir={FLAGS.model_dir}: no such folder')
  if FLAGS.eval_batch_size <= 0:
    raise EvaluationError(f'--eval_batch_size must be positive, got {FLAGS.eval_batch_size}')
  for name in ('max_eval_images', 'num_sample_images'):
    if FLAGS[name].value < 0:
      raise EvaluationError(f'--{name} must be >= 0, got {FLAGS[name].value}')
  if FLAGS.output_dir:
    try:
      staging.check_output_dir(FLAGS.output_dir)
    except ValueError as e:
      raise EvaluationError(f'--output_dir={FLAGS.output_dir}: {e}') from None
  return mode, metrics


def _run_folder():
  """The training run folder of --model_dir or --checkpoint, or None."""
  return runs.find_run_folder(FLAGS.model_dir) or runs.find_run_folder(FLAGS.checkpoint)


def _config():
  """The RunConfig: the run's (--model_dir / --checkpoint), with the flags given
  overriding it; without a run folder, the flags alone."""
  folder = _run_folder()
  try:
    base = runs.read_run_config(folder) if folder else None
    config = config_lib.RunConfig.from_flags(FLAGS, base=base)
    config_flags.check_dataset_path(config.data.dataset)
    return config
  except (runs.RunError, ValueError) as e:
    raise EvaluationError(str(e)) from None


def _class_names(mode, config):
  """--classes, else the run's class list or the SavedModel's, else None (the dataset's)."""
  if FLAGS.classes:
    return list(FLAGS.classes)
  if config.class_names:
    return list(config.class_names)
  if mode == 'saved_model':
    try:
      info = runs.read_export_info(runs.resolve_saved_model(FLAGS.saved_model))
    except runs.RunError:
      return None  # reported when the SavedModel is loaded
    if info is not None:
      if not isinstance(info.get('class_names'), list):
        raise EvaluationError(f'{FLAGS.saved_model}: {runs.EXPORT_INFO_FILE} has no '
                              '"class_names" list')
      return [str(c) for c in info['class_names']]
  return None


def _load_source(config, class_names):
  from faster_rcnn_tf.data import registry
  data = config.data
  where = f'--dataset={data.dataset} --eval_split={data.eval_split}'
  try:
    source = registry.get_source(data.dataset, data.eval_split, classes=class_names,
                                 seed=config.train.seed, **config_lib.source_kwargs(data))
  except (ValueError, FileNotFoundError, OSError, KeyError) as e:
    raise EvaluationError(f'{where}: {e}') from None
  if source.num_images == 0:
    raise EvaluationError(f'{where}: the split has no images')
  return source


def _load_checkpoint(config, source):
  """(FasterRCNN restored from the checkpoint, checkpoint path, step), built for the
  evaluated dataset's classes."""
  config = config.replace(class_names=tuple(source.class_names))
  folder = _run_folder()
  try:
    if folder:
      loaded = runs.load_model(folder, FLAGS.checkpoint, config=config)
      return loaded.model, loaded.checkpoint, loaded.step
    # A checkpoint outside a run folder: the model comes from the flags alone.
    path = runs.resolve_checkpoint(FLAGS.model_dir, FLAGS.checkpoint)
    model = runs.build_model(config)
    runs.restore_checkpoint(model, path, None, source.class_names)
    return model, path, runs.checkpoint_step(path)
  except runs.RunError as e:
    raise EvaluationError(str(e)) from None


def _model_run(config, source, keep_images):
  """Restores the checkpoint and runs the model over the split; (SplitRun, path, step)."""
  import tensorflow as tf
  from faster_rcnn_tf.evaluation import run_model
  model, path, step = _load_checkpoint(config, source)
  print(f'Evaluating {path} (step {step}) on {config.data.dataset} '
        f'{config.data.eval_split}', flush=True)
  run = run_model.run_on_split(
      tf.function(model.detect), source, batch_size=config.train.eval_batch_size,
      min_size=config.data.inference_min_size, max_size=config.data.max_size,
      max_images=FLAGS.max_eval_images, keep_images=keep_images)
  return run, path, step


def _produce(mode, config, source, keep_images):
  """(run_model.SplitRun, checkpoint path or None, checkpoint step or None)."""
  from faster_rcnn_tf.evaluation import run_model
  from faster_rcnn_tf.evaluation import saved_model_runner
  from faster_rcnn_tf.evaluation import scoring
  try:
    if mode == 'detections':
      truth = run_model.collect_ground_truth(source, FLAGS.max_eval_images, keep_images)
      run_model.check_not_empty(truth, source)
      results, detections = scoring.load_detections(
          FLAGS.detections, truth, source.category_ids,
          restrict_to_truth=FLAGS.max_eval_images > 0)
      return run_model.SplitRun(truth, detections, results, []), None, None
    if mode == 'saved_model':
      detector = saved_model_runner.SavedModelDetector(FLAGS.saved_model)
      run = saved_model_runner.run_saved_model(
          detector, source, batch_size=config.train.eval_batch_size,
          max_images=FLAGS.max_eval_images, keep_images=keep_images)
      return run, None, None
    return _model_run(config, source, keep_images)
  except run_model.EmptySplitError as e:
    raise EvaluationError(f'--dataset={config.data.dataset} --eval_split='
                          f'{config.data.eval_split}: {e} (see the data problems logged '
                          'above)') from None


def _write_outputs(out_dir, run, scores, source, metric_names, table_data, checkpoint,
                   step, config):
  """Writes every output file via a staging folder (all or nothing)."""
  from faster_rcnn_tf.evaluation import detections_io
  from faster_rcnn_tf.evaluation import report
  from faster_rcnn_tf.evaluation import samples
  from faster_rcnn_tf.evaluation import staging
  metrics, per_class = table_data
  pictures = samples.render_samples(run.truth, run.detections, source.class_names,
                                    FLAGS.sample_score_threshold)
  extra = {
      'metric_names': list(metric_names),
      'dataset': config.data.dataset,
      'num_images': run.truth.num_images,
      'class_names': list(source.class_names),
      'category_ids': [int(c) for c in source.category_ids],
      'iou_threshold_voc': 0.5,
      'checkpoint': checkpoint,
      'saved_model': FLAGS.saved_model,
      'detections_file': FLAGS.detections,
      'max_eval_images': FLAGS.max_eval_images,
      'data_problems': source.problems.summary(),
  }
  if scores.coco is not None:
    extra['coco_summary'] = scores.coco['summary']
    extra['coco_ground_truth'] = scores.coco['ground_truth']
  with staging.StagedOutput(out_dir, last=report.METRICS_FILENAME) as stage:
    detections_io.write_coco_results(stage.path('detections.json'), run.results,
                                     image_ids=list(run.truth.gt),
                                     category_ids=list(source.category_ids))
    curves = scores.curves
    report.plot_pr_curves(stage.path(report.PR_CURVES_DIRNAME), source.class_names,
                          curves['precision'], curves['recall'],
                          ap={name: r['ap'] for name, r in scores.voc.items()} or None)
    for name, data in pictures.items():
      with open(stage.path('samples', name), 'wb') as f:
        f.write(data)
    report.write_metrics_json(stage.path(report.METRICS_FILENAME), metrics, per_class,
                              split=config.data.eval_split, checkpoint_step=step,
                              extra=extra)
    stage.commit()


def evaluate():
  """The whole evaluation; raises EvaluationError for bad input."""
  from faster_rcnn_tf.evaluation import report
  from faster_rcnn_tf.evaluation import scoring
  mode, metric_names = _check_flags()
  config = _config()
  source = _load_source(config, _class_names(mode, config))
  keep = FLAGS.num_sample_images if FLAGS.output_dir else 0
  run, checkpoint, step = _produce(mode, config, source, keep)
  data = config.data
  scores = scoring.score(metric_names, run.truth, run.detections, run.results,
                         source.class_names, source.category_ids,
                         coco_json=scoring.coco_json_path(data.dataset))
  metrics, per_class = report.collect_metrics(source.class_names, scores.voc, scores.coco)
  if FLAGS.output_dir:
    _write_outputs(FLAGS.output_dir, run, scores, source, metric_names, (metrics, per_class),
                   checkpoint, step, config)
  print(f'\n{data.dataset} {data.eval_split}: {run.truth.num_images} images, '
        f'{len(run.detections)} detections')
  print(report.format_class_table(per_class, metrics))
  if scores.coco is not None:
    print(scores.coco['summary'].rstrip())
  for label, value in scoring.headline(scores).items():
    print(f'{label} on {data.dataset} {data.eval_split}: {value:.4f}')
  if FLAGS.output_dir:
    print(f'Wrote {FLAGS.output_dir}: metrics.json, detections.json, pr_curves/, samples/')
  return 0


def main(argv):
  del argv
  console.quiet_loggers()
  try:
    return evaluate()
  except EvaluationError as e:
    print(f'evaluate.py: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=_flags_parser)
