"""Running a detector over a dataset split and scoring it (used by train.py and evaluate.py).

The shared evaluation path (`run_on_split`, used by train.py's evaluation and by
evaluate.py, so both report the same numbers):

  * ground truth comes from the source's records (`collect_ground_truth`): original-image
    pixels, every object (no `max_boxes` truncation, no float32 resize round trip);
  * the model runs on `data.pipeline.make_dataset` batches of the same split (same images,
    same order; `max_boxes` only sizes the unused padded ground truth);
  * detections are mapped back to original-image pixels, converted to COCO results
    (`category_ids`) and back (`canonical_detections`): the scores are computed from
    exactly the numbers a detections.json holds, so re-scoring that file reproduces them.
"""

import dataclasses
import itertools
from typing import Any, Dict, List

import numpy as np

from faster_rcnn_tf import inputs
from faster_rcnn_tf import progress as progress_lib
from faster_rcnn_tf.evaluation import common
from faster_rcnn_tf.evaluation import detections_io
from faster_rcnn_tf.evaluation import voc_metrics

VOC_METRICS = {'voc07': True, 'voc': False}


def score_voc(gt, detections, num_classes, metrics=('voc07',)):
  """{metric name: evaluate_voc result} for each VOC metric named in `metrics`."""
  return {m: voc_metrics.evaluate_voc(gt, detections, num_classes,
                                      use_07_metric=VOC_METRICS[m])
          for m in metrics if m in VOC_METRICS}


# ---- the shared evaluation path ----


class EmptySplitError(ValueError):
  """The evaluated split has no loadable images."""


def check_not_empty(truth, source):
  """Raises EmptySplitError when `truth` has no images."""
  if not truth.num_images:
    raise EmptySplitError(f'split {source.split!r} of {source.name} has no loadable images')


@dataclasses.dataclass
class SplitTruth:
  """Ground truth of the evaluated images, in source order.

  gt: the gt dict (`common`): image_id -> boxes / classes / difficult, original pixels.
  image_sizes: image_id -> (height, width) of the original image.
  images: image_id -> uint8 [H, W, 3] for the first `keep_images` images (pictures).
  max_boxes: the largest number of objects in one image.
  """
  gt: Dict[Any, dict]
  image_sizes: Dict[Any, tuple]
  images: Dict[Any, np.ndarray]
  max_boxes: int

  @property
  def num_images(self):
    return len(self.gt)


class TruthCollector:
  """Builds a `SplitTruth` from records as they stream past (`tap`)."""

  def __init__(self, keep_images=0):
    self.keep_images = int(keep_images)
    self.sizes = {}
    self.images = {}

  def tap(self, records):
    for rec in records:
      key = common.python_scalar(rec['image_id'])
      self.sizes[key] = tuple(int(v) for v in np.asarray(rec['original_size']).reshape(-1))
      if len(self.images) < self.keep_images:
        self.images[key] = np.asarray(rec['image'])
      yield rec

  def truth(self, gt):
    max_boxes = max((len(e['classes']) for e in gt.values()), default=0)
    return SplitTruth(gt, self.sizes, self.images, max_boxes)


def split_records(source, max_images=0):
  """The source's records in order, at most `max_images` of them (0: all)."""
  records = source.records()
  return itertools.islice(records, int(max_images)) if max_images else records


def collect_ground_truth(source, max_images=0, keep_images=0):
  """`SplitTruth` of the first `max_images` (0: all) loadable images of a source.

  The images are those `make_eval_dataset` yields, in the same order (skipped images are
  left out of both).
  """
  collector = TruthCollector(keep_images)
  gt = common.ground_truth_from_records(collector.tap(split_records(source, max_images)))
  return collector.truth(gt)


class _FirstImages:
  """A view of a source limited to its first n loadable images (for `make_dataset`)."""

  def __init__(self, source, n):
    self._source = source
    self._n = int(n)

  def as_dataset(self, shuffle_seed=None):
    ds = self._source.as_dataset(shuffle_seed=shuffle_seed)
    return ds.take(self._n) if self._n else ds

  def __getattr__(self, name):
    return getattr(self._source, name)


def make_eval_dataset(source, batch_size, min_size=600, max_size=1000, max_boxes=1,
                      max_images=0):
  """Evaluation batches of a source (no shuffling, flips or repeat; last batch partial).

  max_images > 0 keeps the first max_images loadable images, exactly. Images are padded
  to a few fixed sides (`pipeline.bucket_sides`), so a split of photos of many sizes
  traces the detector a handful of times, not once per padded size.
  """
  from faster_rcnn_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  view = _FirstImages(source, max_images) if max_images else source
  return pipeline.make_dataset(view, training=False, batch_size=int(batch_size),
                               min_size=min_size, max_size=max_size,
                               max_boxes=max(int(max_boxes), 1),
                               pad_sides=pipeline.bucket_sides(min_size, max_size))


def run_detector(detect_fn, dataset, num_images=None, show_progress=True, keep_batches=1):
  """Runs `detect_fn(images, image_sizes)` over the batches of `dataset`.

  Returns:
    (common.Detections in original-image pixels, clipped to the image; the image ids in
    dataset order; the first `keep_batches` (batch, numpy outputs) pairs).
  """
  parts, image_ids, samples = [], [], []
  bar = (progress_lib.Progress('eval', num_images or 0, unit='img')
         if show_progress else None)
  for batch in dataset:
    outputs = detect_fn(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    parts.append(detections_io.outputs_to_detections(
        outputs, batch[inputs.IMAGE_IDS], batch[inputs.SCALES],
        batch[inputs.ORIGINAL_SIZES]))
    image_ids.extend(common.python_scalar(v)
                     for v in np.asarray(batch[inputs.IMAGE_IDS]).reshape(-1))
    if len(samples) < keep_batches:
      samples.append((batch, outputs))
    if bar:
      bar.update(len(image_ids))
  detections = common.concat_detections(parts) if parts else common.as_detections([])
  return detections, image_ids, samples


def canonical_detections(detections, category_ids=None):
  """(COCO results list, the Detections read back from it): what scoring and files use.

  x, y, w, h are computed from the boxes once; reading them back gives the boxes every
  scorer sees, so evaluating a written detections.json reproduces the same numbers.
  """
  results = detections_io.detections_to_coco_results(detections, category_ids)
  return results, detections_io.coco_results_to_detections(results, category_ids)


def check_same_images(truth, image_ids, what='the model run'):
  """Raises RuntimeError when `image_ids` are not exactly the ground truth's images."""
  if len(image_ids) != len(set(image_ids)) or set(image_ids) != set(truth.gt):
    missing = [i for i in truth.gt if i not in set(image_ids)][:5]
    extra = [i for i in set(image_ids) if i not in truth.gt][:5]
    raise RuntimeError(f'{what} saw other images than the ground truth: {len(image_ids)} '
                       f'vs {len(truth.gt)} images; missing {missing}, extra {extra}, '
                       f'{len(image_ids) - len(set(image_ids))} repeated')


@dataclasses.dataclass
class SplitRun:
  """A detector's run over a split: ground truth, detections and their COCO results."""
  truth: SplitTruth
  detections: common.Detections   # canonical (see `canonical_detections`)
  results: List[dict]             # COCO results, category ids of the source
  samples: list                   # (batch, outputs) of the first batch (train summaries)


def run_on_split(detect_fn, source, *, batch_size, min_size=600, max_size=1000,
                 max_images=0, keep_images=0, show_progress=True, allow_empty=False):
  """Runs a detector over a split and collects everything needed to score it.

  Args:
    detect_fn: `FasterRCNN.detect` or a tf.function of it.
    source: a dataset source (`data.registry.get_source`).
    batch_size, min_size, max_size: the evaluation pipeline.
    max_images: evaluate the first max_images loadable images (0: all).
    keep_images: original images kept in `truth.images` for pictures.
    allow_empty: a split without loadable images gives an empty run instead of an error.
  Returns:
    `SplitRun`.
  Raises:
    EmptySplitError: the split has no loadable images (unless allow_empty).
  """
  truth = collect_ground_truth(source, max_images, keep_images)
  if allow_empty and not truth.num_images:
    return SplitRun(truth, common.as_detections([]), [], [])
  check_not_empty(truth, source)
  dataset = make_eval_dataset(source, batch_size, min_size, max_size, truth.max_boxes,
                              max_images)
  detections, image_ids, samples = run_detector(detect_fn, dataset, truth.num_images,
                                                show_progress)
  check_same_images(truth, image_ids)
  results, detections = canonical_detections(detections, source.category_ids)
  return SplitRun(truth, detections, results, samples)


def voc07_map(model, source, *, batch_size, min_size=600, max_size=1000, max_images=0,
              show_progress=True):
  """(VOC07 mAP@0.5, its `evaluate_voc` result, the `SplitRun`) of a model on a split.

  What train.py reports after training; evaluate.py --metric=voc07 gives the same number.
  A split without loadable images gives NaN (training does not fail at its very end).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  run = run_on_split(tf.function(model.detect), source, batch_size=batch_size,
                     min_size=min_size, max_size=max_size, max_images=max_images,
                     show_progress=show_progress, allow_empty=True)
  result = score_voc(run.truth.gt, run.detections, source.num_classes, ('voc07',))['voc07']
  return float(result['map']), result, run
