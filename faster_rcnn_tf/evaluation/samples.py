"""Pictures of a few evaluated images: ground truth and predicted boxes, names and scores.

Each picture has two panels of the same image: on the left the ground truth (white boxes,
'GT: <name>' labels, difficult objects marked), on the right the predictions scoring at
least `score_threshold` (at most `max_detections`, best first) in their class colour with
'<name> <score>' labels. Small images are enlarged (nearest neighbour, a whole factor) so
the labels stay readable.
"""

import io
import math
import re

import numpy as np
from PIL import Image

from faster_rcnn_tf import visualize

GT_COLOR = (255, 255, 255)
GAP = 8
MIN_SIDE = 320


def _enlarge(image, min_side=MIN_SIDE):
  factor = max(1, math.ceil(min_side / max(1, min(image.shape[:2]))))
  if factor > 1:
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
  return image, factor


def draw_sample(image, gt_entry, detections, image_id, class_names, score_threshold=0.5,
                max_detections=20):
  """uint8 [H', 2 W' + GAP, 3] picture of one image (ground truth | predictions).

  Args:
    image: uint8 [H, W, 3] original image.
    gt_entry: the image's gt dict entry (boxes yxyx original pixels, classes, difficult).
    detections: common.Detections of the whole split (those of image_id are drawn).
    image_id: the image's id.
    class_names: K names.
  """
  image, factor = _enlarge(np.asarray(image, np.uint8))
  gt_boxes, gt_labels = [], []
  classes = np.asarray(gt_entry['classes']).reshape(-1)
  difficult = gt_entry.get('difficult')
  difficult = np.zeros(len(classes), bool) if difficult is None else np.asarray(difficult)
  for box, cls, diff in zip(np.asarray(gt_entry['boxes']).reshape(-1, 4), classes,
                            difficult.reshape(-1)):
    gt_boxes.append(box * factor)
    gt_labels.append(f'GT: {class_names[int(cls) - 1]}' + (' (difficult)' if diff else ''))
  left = visualize.draw_boxes(image, np.asarray(gt_boxes).reshape(-1, 4), gt_labels,
                              [GT_COLOR] * len(gt_labels))
  ids = detections.image_ids
  same = (ids == image_id) if ids.dtype != object else np.array(
      [i == image_id for i in ids.tolist()], bool)
  mine = np.nonzero(np.asarray(same, bool).reshape(-1))[0]
  mine = mine[detections.scores[mine] >= score_threshold]
  mine = mine[np.argsort(-detections.scores[mine], kind='stable')][:max_detections]
  names = [class_names[int(detections.classes[d]) - 1] for d in mine]
  right = visualize.draw_boxes(
      image, detections.boxes[mine].reshape(-1, 4) * factor,
      [f'{n} {detections.scores[d]:.2f}' for n, d in zip(names, mine)],
      [visualize.color_for(n) for n in names])
  gap = np.full((image.shape[0], GAP, 3), 255, np.uint8)
  return np.concatenate([left, gap, right], axis=1)


def render_samples(truth, detections, class_names, score_threshold=0.5):
  """{file name: PNG bytes} for the images kept in `truth.images` (in order)."""
  out = {}
  for k, (image_id, image) in enumerate(truth.images.items()):
    picture = draw_sample(image, truth.gt[image_id], detections, image_id, class_names,
                          score_threshold)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format='PNG')
    safe_id = re.sub(r'[^A-Za-z0-9_.-]+', '_', str(image_id))
    out[f'sample_{k:02d}_image_{safe_id}.png'] = buffer.getvalue()
  return out
