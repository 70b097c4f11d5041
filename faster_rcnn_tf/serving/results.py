"""predict.py's outputs: one JSON record per image, and annotated pictures.

A record (all lists, JSON-ready):
  file              the image path as given
  image_size        [height, width] of the decoded image
  num_detections    int
  boxes             [[ymin, xmin, ymax, xmax], ...] continuous pixels of the original image
                    (pixel (r, c) covers [r, r+1) x [c, c+1); see ops.box_ops)
  boxes_normalized  the same divided by (height, width, height, width)
  scores            [float, ...]   high to low
  classes           [int, ...]     1..K
  class_names       [str, ...]
  annotated         path of the annotated PNG (or null)
  error             null, or why the image has no detections (could not be read/decoded)
"""

import numpy as np

from faster_rcnn_tf import visualize
from faster_rcnn_tf.serving import export_module as em


def image_record(path, height, width, outputs, row):
  """The record of image `row` of a client's `Outputs` (see `client`)."""
  n = int(outputs[em.NUM_DETECTIONS][row])
  normalized = np.asarray(outputs[em.DETECTION_BOXES][row, :n], np.float64)
  pixels = normalized * np.array([height, width, height, width], np.float64)
  return {
      'file': path,
      'image_size': [int(height), int(width)],
      'num_detections': n,
      'boxes': [[round(float(v), 3) for v in box] for box in pixels],
      'boxes_normalized': [[float(v) for v in box] for box in normalized],
      'scores': [float(v) for v in outputs[em.DETECTION_SCORES][row, :n]],
      'classes': [int(v) for v in outputs[em.DETECTION_CLASSES][row, :n]],
      'class_names': [str(v) for v in outputs[em.DETECTION_CLASS_NAMES][row, :n]],
      'annotated': None,
      'error': None,
  }


def error_record(path, message):
  """The record of an image that could not be processed."""
  return {'file': path, 'image_size': None, 'num_detections': 0, 'boxes': [],
          'boxes_normalized': [], 'scores': [], 'classes': [], 'class_names': [],
          'annotated': None, 'error': message}


def annotate(image_uint8, record, min_score=0.5):
  """uint8 [H, W, 3] with the record's boxes scoring >= min_score drawn and labelled."""
  keep = [i for i, s in enumerate(record['scores']) if s >= min_score]
  boxes = np.array([record['boxes'][i] for i in keep], np.float64).reshape(-1, 4)
  labels = [f'{record["class_names"][i]} {record["scores"][i]:.2f}' for i in keep]
  return visualize.draw_boxes(image_uint8, boxes, labels)
