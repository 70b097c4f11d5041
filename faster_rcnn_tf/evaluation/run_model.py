"""Running a detector over a dataset split and scoring it (used by train.py and evaluate.py)."""

import numpy as np

from faster_rcnn_tf import inputs
from faster_rcnn_tf import progress as progress_lib
from faster_rcnn_tf.evaluation import common
from faster_rcnn_tf.evaluation import detections_io
from faster_rcnn_tf.evaluation import voc_metrics

VOC_METRICS = {'voc07': True, 'voc': False}


def detect_split(detect_fn, dataset, num_images=None, show_progress=True):
  """Runs `detect_fn(images, image_sizes) -> outputs` over every batch of `dataset`.

  Args:
    detect_fn: callable on float32 images [B, Hp, Wp, 3] and int32 image_sizes [B, 2]
      returning the detection dict of `inputs` (boxes in resized-image pixels).
    dataset: batches in the `inputs` batch format (not repeated).
    num_images: for the progress display.
  Returns:
    (gt dict, common.Detections, a few (image, gt, detections) samples for pictures);
    everything in original-image pixels.
  """
  gt = {}
  parts = []
  samples = []
  bar = progress_lib.Progress('eval', num_images or 0, unit='img') if show_progress else None
  done = 0
  for batch in dataset:
    outputs = detect_fn(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    common.ground_truth_from_batch(batch, gt)
    dets = detections_io.outputs_to_detections(outputs, batch[inputs.IMAGE_IDS],
                                               batch[inputs.SCALES],
                                               batch[inputs.ORIGINAL_SIZES])
    parts.append(dets)
    if len(samples) < 4:
      samples.append((batch, outputs))
    done += int(batch[inputs.IMAGES].shape[0])
    if bar:
      bar.update(done)
  if bar and num_images:
    bar.update(num_images, force=True)
  detections = common.concat_detections(parts) if parts else common.as_detections([])
  return gt, detections, samples


def score_voc(gt, detections, num_classes, metrics=('voc07',)):
  """{metric name: evaluate_voc result} for each VOC metric named in `metrics`."""
  return {m: voc_metrics.evaluate_voc(gt, detections, num_classes,
                                      use_07_metric=VOC_METRICS[m])
          for m in metrics if m in VOC_METRICS}
