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

`predict_files` runs a client (`serving.client`) over files in batches and writes the
pictures; `write_json` writes {"source": ..., "images": [records]}.
"""

import io
import json
import os

import numpy as np
from absl import logging
from PIL import Image

from faster_rcnn_tf import fileio
from faster_rcnn_tf import visualize
from faster_rcnn_tf.data import decode
from faster_rcnn_tf import box_scaling
from faster_rcnn_tf.serving import export_module as em

OUTPUT_JSON = 'detections.json'


def image_record(path, height, width, outputs, row):
  """The record of image `row` of a client's `Outputs` (see `client`)."""
  n = int(outputs[em.NUM_DETECTIONS][row])
  normalized = np.asarray(outputs[em.DETECTION_BOXES][row, :n], np.float64)
  pixels = box_scaling.rescale_boxes(normalized[np.newaxis], [[1, 1]], [[height, width]],
                                     clip=False)[0]
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


def picture_names(files):
  """A distinct NAME.png for each input file (its stem, then stem_2, stem_3, ...)."""
  used = set()
  names = []
  for path in files:
    stem = os.path.splitext(os.path.basename(path))[0] or 'image'
    name, k = f'{stem}.png', 1
    while name in used:
      k += 1
      name = f'{stem}_{k}.png'
    used.add(name)
    names.append(name)
  return names


def read_image(path):
  """(file bytes, uint8 [H, W, 3] RGB) of a JPEG or PNG file.

  Raises ValueError (or OSError) with the reason for anything else or an undecodable
  file; such files are not sent to the model. (EXIF orientation is not applied, as in the
  exported graph.)
  """
  with open(path, 'rb') as f:
    data = f.read()
  kind = decode.sniff_format(data)
  if kind not in ('JPEG', 'PNG'):
    raise ValueError(f'not a JPEG or PNG image (content: {kind or "unknown"})')
  try:
    with Image.open(io.BytesIO(data)) as image:
      pixels = np.asarray(image.convert('RGB'))
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'cannot decode the {kind}: {e}')
  return data, pixels


def predict_files(files, detector, output_dir, batch_size=8, min_score=0.5, draw=True):
  """Runs detector.detect (see `client`) over image files, batch_size files a request.

  Writes output_dir/NAME.png pictures (if draw) and returns one record per file, in order.
  Raises client.ServingError when a request fails.
  """
  os.makedirs(output_dir, exist_ok=True)
  names = picture_names(files)
  records = []
  for start in range(0, len(files), batch_size):
    chunk = range(start, min(start + batch_size, len(files)))
    read = {}
    for i in chunk:
      try:
        read[i] = read_image(files[i])
      except (OSError, ValueError) as e:
        read[i] = e
    sent = [i for i in chunk if not isinstance(read[i], Exception)]
    outputs = detector.detect([read[i][0] for i in sent]) if sent else None
    for i in chunk:
      if isinstance(read[i], Exception):
        logging.warning('%s: %s', files[i], read[i])
        records.append(error_record(files[i], str(read[i])))
        continue
      pixels = read[i][1]
      record = image_record(files[i], pixels.shape[0], pixels.shape[1], outputs,
                            sent.index(i))
      if draw:
        path = os.path.join(output_dir, names[i])
        visualize.save_png(annotate(pixels, record, min_score), path)
        record['annotated'] = path
      records.append(record)
  return records


def write_json(path, source, records):
  """Writes {"source": source, "images": records} to path (temporary file + rename)."""
  fileio.atomic_write_text(path, json.dumps({'source': source, 'images': records}, indent=1))
