"""COCO-format source (`coco:ANNOTATIONS.json[:IMAGES_DIR]`).

IMAGES_DIR defaults to `<folder of the json>/images`. For the standard COCO layout give it:
`coco:annotations/instances_val2017.json:val2017`. `images[].file_name` is joined to it.

image_id = COCO's own `images[].id` (the ids pycocotools evaluation expects). Images are in
the json's `images` order. The `split` argument is only a label: the json is the split.

Classes: the json's categories sorted by category id give class ids 1..K (so non-contiguous
COCO ids 1..90 become 1..80); `source.category_ids[i - 1]` is the COCO id of class i and
`source.class_id_of_category` maps back. With `classes` given, class_names = classes (each
must be a category name) and annotations of other categories are dropped ('unknown_class').

Boxes: COCO [x, y, width, height] -> [y, x, y + height, x + width] (`box_ops.coco_to_boxes`).
Crowd annotations (iscrowd=1) are dropped from the targets and counted as 'crowd_box'
(COCO evaluation handles crowd regions itself, from the json). Width or height zero ->
'zero_area_box', negative -> 'inverted_box', dropped; boxes are clipped to the decoded
image, whose size is trusted over the json's ('size_mismatch'). No annotation is-difficult:
difficult is all False. Problems are counted in `source.problems` (see `problems.py`).
"""

import json
import os

import numpy as np

from faster_rcnn_tf.data import decode
from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data.source import Source
from faster_rcnn_tf.ops import box_ops


class CocoSource(Source):
  """COCO json source; see the module docstring."""

  def __init__(self, annotations_file, images_dir=None, split='train', classes=None,
               name=None):
    annotations_file = os.path.abspath(os.path.expanduser(annotations_file))
    if images_dir is None:
      images_dir = os.path.join(os.path.dirname(annotations_file), 'images')
    self.images_dir = os.path.abspath(os.path.expanduser(images_dir))
    with open(annotations_file, encoding='utf-8') as f:
      data = json.load(f)
    json_name = os.path.basename(annotations_file)
    categories = sorted(data.get('categories', []), key=lambda c: c['id'])
    name_to_category = {c['name']: c['id'] for c in categories}
    if classes is None:
      class_names = [c['name'] for c in categories]
      category_ids = [c['id'] for c in categories]
    else:
      missing = [c for c in classes if c not in name_to_category]
      if missing:
        raise ValueError(f'classes {missing} are not categories of {annotations_file}; '
                         f'it has {sorted(name_to_category)}')
      class_names = list(classes)
      category_ids = [name_to_category[c] for c in classes]
    super().__init__(name or f'coco:{annotations_file}', split, class_names, category_ids)
    self.class_id_of_category = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
    category_names = {c['id']: c['name'] for c in categories}

    images = data.get('images', [])
    per_image = {im['id']: [] for im in images}
    for ann in data.get('annotations', []):
      if ann.get('image_id') not in per_image:
        self.problems.report('orphan_annotation', json_name,
                             f'annotation {ann.get("id")} refers to image_id '
                             f'{ann.get("image_id")}, not in images; ignored')
        continue
      per_image[ann['image_id']].append(ann)

    self._entries = []
    for im in images:
      file_name = im.get('file_name', '')
      boxes, classes_ = [], []
      for ann in per_image[im['id']]:
        what = f'annotation {ann.get("id")}'
        category = ann.get('category_id')
        if category not in self.class_id_of_category:
          cname = category_names.get(category, f'id {category}')
          self.problems.report('unknown_class', file_name,
                               f'{what}: category {cname!r} not in {self.class_names}; '
                               'dropped')
          continue
        if ann.get('iscrowd', 0):
          self.problems.report('crowd_box', file_name, f'{what}: iscrowd=1; dropped')
          continue
        bbox = ann.get('bbox')
        try:
          x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
          self.problems.report('invalid_box', file_name, f'{what}: bbox {bbox!r}; dropped')
          continue
        if not np.all(np.isfinite([x, y, w, h])):
          self.problems.report('invalid_box', file_name, f'{what}: bbox {bbox!r}; dropped')
          continue
        if w == 0 or h == 0:
          self.problems.report('zero_area_box', file_name,
                               f'{what}: bbox [x, y, w, h] = {bbox} has zero area; dropped')
          continue
        if w < 0 or h < 0:
          self.problems.report('inverted_box', file_name,
                               f'{what}: bbox [x, y, w, h] = {bbox} is inverted; dropped')
          continue
        boxes.append(box_ops.coco_to_boxes([x, y, w, h]))
        classes_.append(self.class_id_of_category[category])
      self._entries.append({
          'image_id': im['id'],
          'file_name': file_name,
          'size': (int(im.get('height') or 0), int(im.get('width') or 0)),
          'boxes': np.asarray(boxes, np.float32).reshape(-1, 4),
          'classes': np.asarray(classes_, np.int32),
      })

  def __len__(self):
    return len(self._entries)

  def image_file(self, index):
    """Path of candidate image `index`'s file."""
    return os.path.join(self.images_dir, self._entries[index]['file_name'])

  def image_key(self, index):
    """The image's name for split hashing and conversion: file_name without extension."""
    return os.path.splitext(self._entries[index]['file_name'])[0]

  def graph_inputs(self):
    return self.entry_graph_inputs('yxyx')

  def load(self, index):
    entry = self._entries[index]
    name = entry['file_name']
    image = decode.decode_image_file(os.path.join(self.images_dir, name), self.problems,
                                     report_name=name)
    if image is None:
      return None
    height, width = image.shape[:2]
    records_lib.check_declared_size(entry['size'], height, width, self.problems, name,
                                    'json size')
    boxes, keep = records_lib.clean_boxes(entry['boxes'], height, width, self.problems, name)
    record = records_lib.make_record(image, boxes, entry['classes'][keep], None,
                                     entry['image_id'])
    return self._finish(record, name)
