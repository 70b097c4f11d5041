"""Pictures of a few evaluated images: ground truth and predicted boxes, names and scores.

Ground-truth boxes are drawn in white with 'GT: <name>' labels (difficult ones 'GT: <name>
(difficult)'), predictions in their class colour with '<name> <score>'. Only predictions
scoring at least `score_threshold` are drawn (at most `max_detections`, best first).
Small images are enlarged (nearest neighbour, a whole factor) so labels stay readable.
"""

import io
import math
import re

import numpy as np
from PIL import Image

from faster_rcnn_tf import visualize

GT_COLOR = (255, 255, 255)
MIN_SIDE = 320


def _enlarge(image, min_side=MIN_SIDE):
  factor = max(1, math.ceil(min_side / max(1, min(image.shape[:2]))))
  if factor > 1:
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
  return image, factor


def draw_sample(image, gt_entry, detections, image_id, class_names, score_threshold=0.5,
                max_detections=20):
  """uint8 [H', W', 3] picture of one image.

  Args:
    image: uint8 [H, W, 3] original image.
    gt_entry: the image's gt dict entry (boxes yxyx original pixels, classes, difficult).
    detections: common.Detections of the whole split (those of image_id are drawn).
    image_id: the image's id.
    class_names: K names.
  """
  image, factor = _enlarge(np.asarray(image, np.uint8))
  boxes, labels, colors = [], [], []
  difficult = np.asarray(gt_entry.get('difficult', np.zeros(len(gt_entry['classes']), bool)))
  for box, cls, diff in zip(np.asarray(gt_entry['boxes']).reshape(-1, 4),
                            np.asarray(gt_entry['classes']).reshape(-1), difficult):
    boxes.append(box * factor)
    labels.append(f'GT: {class_names[int(cls) - 1]}' + (' (difficult)' if diff else ''))
    colors.append(GT_COLOR)
  mine = np.nonzero(np.asarray([i == image_id for i in detections.image_ids.tolist()],
                               bool).reshape(-1))[0]
  mine = mine[detections.scores[mine] >= score_threshold]
  mine = mine[np.argsort(-detections.scores[mine], kind='stable')][:max_detections]
  for d in mine:
    name = class_names[int(detections.classes[d]) - 1]
    boxes.append(detections.boxes[d] * factor)
    labels.append(f'{name} {detections.scores[d]:.2f}')
    colors.append(visualize.color_for(name))
  return visualize.draw_boxes(image, np.asarray(boxes).reshape(-1, 4), labels, colors)


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
