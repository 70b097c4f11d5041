"""Evaluating an exported SavedModel (export.py) instead of a checkpoint.

The contract with export.py: the SavedModel has a signature 'detect_images' taking one
input, uint8 images [B, H, W, 3] (original pixels, one common size per call), and
returning
    detection_boxes    float [B, M, 4]  yxyx, normalized to the original image ([0, 1])
    detection_scores   float [B, M]
    detection_classes  int32 [B, M]     1..K (0 = padding)
    num_detections     int32 [B]
Images are fed in source order, consecutive images of equal size batched together (at
most `batch_size`); the model does its own resizing. The class ids must be those of the
evaluated dataset: evaluate.py takes the class list from export.py's export_info.json
(or --model_dir's run configuration, or --classes). Given an export.py base folder
(EXPORT_DIR with version folders 1, 2, ...), the highest version is evaluated.
"""

import numpy as np
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf import progress as progress_lib
from faster_rcnn_tf import runs
from faster_rcnn_tf.evaluation import common
from faster_rcnn_tf.evaluation import detections_io
from faster_rcnn_tf.evaluation import run_model
from faster_rcnn_tf.evaluation.errors import EvaluationError

SIGNATURE = 'detect_images'


class SavedModelDetector:
  """The 'detect_images' signature of a SavedModel (loaded by `runs.load_model`); call it
  on a uint8 batch [B, H, W, 3] for a dict of numpy outputs."""

  def __init__(self, path):
    try:
      if runs.kind_of(path) != 'saved_model':
        raise runs.RunError(f'{path}: not a SavedModel (no {runs.SAVED_MODEL_FILE} there '
                            'nor in a numeric version folder)')
      loaded = runs.load_model(path)
    except runs.RunError as e:
      raise EvaluationError(f'--saved_model={path}: {e}') from None
    self._detector = loaded.detector()
    self.path = loaded.path

  def __call__(self, images_uint8):
    outputs = self._detector.serve_images(tf.constant(images_uint8, tf.uint8))
    return {k: np.asarray(v) for k, v in outputs.items()}


def _batches(records, batch_size):
  """Lists of consecutive records of one image size, at most batch_size each."""
  batch = []
  for rec in records:
    if batch and (len(batch) == batch_size or
                  np.asarray(batch[0]['image']).shape != np.asarray(rec['image']).shape):
      yield batch
      batch = []
    batch.append(rec)
  if batch:
    yield batch


def run_saved_model(detector, source, *, batch_size, max_images=0, keep_images=0,
                    show_progress=True):
  """Runs a `SavedModelDetector` over a split; returns a `run_model.SplitRun`.

  Ground truth is collected from the same records the model sees (one pass).
  """
  collector = run_model.TruthCollector(keep_images)
  records = collector.tap(run_model.split_records(source, max_images))
  gt, parts = {}, []
  bar = progress_lib.Progress('eval', source.num_images if not max_images else
                              min(max_images, source.num_images), unit='img') \
      if show_progress else None
  for batch in _batches(records, max(int(batch_size), 1)):
    part = common.ground_truth_from_records(batch)
    repeated = set(part) & set(gt)
    if repeated:
      raise ValueError(f'image_id {sorted(repeated)[0]!r} appears twice in {source.name}')
    gt.update(part)
    outputs = detector(np.stack([np.asarray(r['image']) for r in batch]))
    missing = [k for k in (inputs.DETECTION_BOXES, inputs.DETECTION_SCORES,
                           inputs.DETECTION_CLASSES) if k not in outputs]
    if missing:
      raise EvaluationError(f'--saved_model={detector.path}: {SIGNATURE!r} outputs lack '
                            f'{missing} (it returns {sorted(outputs)})')
    height, width = np.asarray(batch[0]['image']).shape[:2]
    outputs = dict(outputs)
    outputs[inputs.DETECTION_BOXES] = (np.asarray(outputs[inputs.DETECTION_BOXES], np.float64)
                                       * np.array([height, width, height, width]))
    classes = np.asarray(outputs[inputs.DETECTION_CLASSES])
    if classes.size and classes.max() > source.num_classes:
      raise EvaluationError(
          f'--saved_model={detector.path} returns class id {int(classes.max())}, but the '
          f'dataset has {source.num_classes} classes {source.class_names}: evaluate it on '
          'the class list it was trained with (--classes or --model_dir)')
    ids = [r['image_id'] for r in batch]
    sizes = np.array([[height, width]] * len(batch))
    parts.append(detections_io.outputs_to_detections(outputs, ids, np.ones(len(batch)), sizes))
    if bar:
      bar.update(len(gt))
  truth = collector.truth(gt)
  run_model.check_not_empty(truth, source)
  detections = common.concat_detections(parts) if parts else common.as_detections([])
  results, detections = run_model.canonical_detections(detections, source.category_ids)
  return run_model.SplitRun(truth, detections, results, [])
