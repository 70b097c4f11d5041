"""PASCAL VOC folder source (`voc:DIR`).

Layout:
    DIR/Annotations/<id>.xml          VOC XML (size, object/name, bndbox, difficult)
    DIR/JPEGImages/<id>.jpg           (.jpeg, .png, .bmp and upper-case variants are found too)
    DIR/ImageSets/Main/<split>.txt    one image id per line (first token of each line)

image_id (evaluation relies on this): the 0-based index of the image's line among the
non-blank lines of ImageSets/Main/<split>.txt. Images skipped for problems keep their index,
so ids never shift. Special split 'all': every Annotations/*.xml sorted by file name,
image_id = index in that sorted list.

Classes: `classes` given -> class_names = classes, objects of other names are dropped
('unknown_class'). Otherwise the sorted set of object names over ALL Annotations/*.xml
(not just the split), so every split of one folder gets the same class ids. Category ids
are the 1-based indices into class_names.

Boxes: VOC's 1-based inclusive (xmin, ymin, xmax, ymax) -> (ymin - 1, xmin - 1, ymax, xmax)
(`box_ops.voc_to_boxes`). A box whose annotated corners coincide on an axis (xmax == xmin or
ymax == ymin: a click without a drag) is 'zero_area_box' and dropped, one with max < min is
'inverted_box' and dropped; then boxes are clipped to the decoded image ('box_clipped') or
dropped when entirely outside it. Difficult objects are kept with difficult=True (the
pipeline's `skip_difficult` drops them for training). The decoded image's size is trusted
over the XML's <size> ('missing_size' / 'size_mismatch' reported). Problems are counted in
`source.problems` (see `problems.py`); nothing in the data makes loading crash.
"""

import os
import xml.etree.ElementTree as ET

import numpy as np

from faster_rcnn_tf.data import decode
from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data.source import Source
from faster_rcnn_tf.ops import box_ops

_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.JPG', '.JPEG', '.PNG', '.BMP')


class MalformedAnnotation(ValueError):
  pass


def _number(element, tag):
  node = element.find(tag)
  if node is None or node.text is None:
    raise ValueError(f'<{tag}> missing')
  return float(node.text.strip())


def parse_voc_xml(path):
  """Parses one VOC XML file.

  Returns:
    dict with 'width', 'height' (ints, 0 when absent or unparseable) and 'objects': a list
    of dicts {'name': str, 'bndbox': (xmin, ymin, xmax, ymax) floats as written, or None
    with 'error': str when the box is missing or not numeric, 'difficult': bool}.
  Raises:
    MalformedAnnotation: the file is not well-formed XML or has no <annotation> root.
  """
  try:
    root = ET.parse(path).getroot()
  except (ET.ParseError, UnicodeDecodeError) as e:
    raise MalformedAnnotation(str(e)) from e
  if root.tag != 'annotation':
    raise MalformedAnnotation(f'root element is <{root.tag}>, not <annotation>')
  size = root.find('size')
  width = height = 0
  if size is not None:
    try:
      width = int(_number(size, 'width'))
      height = int(_number(size, 'height'))
    except ValueError:
      width = height = 0
  objects = []
  for obj in root.findall('object'):
    name_node = obj.find('name')
    name = (name_node.text or '').strip() if name_node is not None else ''
    difficult_node = obj.find('difficult')
    difficult = False
    if difficult_node is not None and difficult_node.text:
      text = difficult_node.text.strip().lower()
      difficult = text in ('1', 'true', 'yes') or (text.replace('.', '', 1).isdigit()
                                                   and float(text) != 0)
    item = {'name': name, 'difficult': difficult, 'bndbox': None}
    bndbox = obj.find('bndbox')
    if bndbox is None:
      item['error'] = '<bndbox> missing'
    else:
      try:
        item['bndbox'] = tuple(_number(bndbox, t) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
      except ValueError as e:
        item['error'] = str(e)
    objects.append(item)
  return {'width': width, 'height': height, 'objects': objects}


def read_split_ids(root, split):
  """Image ids of a split, in file order (the index is the image_id); see module docstring."""
  if split == 'all':
    names = os.listdir(os.path.join(root, 'Annotations'))
    return sorted(os.path.splitext(n)[0] for n in names if n.endswith('.xml'))
  path = os.path.join(root, 'ImageSets', 'Main', f'{split}.txt')
  if not os.path.exists(path):
    main = os.path.join(root, 'ImageSets', 'Main')
    available = sorted(os.path.splitext(n)[0] for n in os.listdir(main)
                       if n.endswith('.txt')) if os.path.isdir(main) else []
    raise FileNotFoundError(f'VOC split file {path} not found; available splits: '
                            f'{available + ["all"]}')
  with open(path, encoding='utf-8') as f:
    return [line.split()[0] for line in f if line.strip()]


class VocSource(Source):
  """PASCAL VOC source; see the module docstring for ids, classes and box handling."""

  def __init__(self, root, split='train', classes=None, name=None):
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(os.path.join(root, 'Annotations')):
      raise FileNotFoundError(f'{root} is not a VOC folder: no Annotations/ inside')
    ids = read_split_ids(root, split)
    self.root = root
    #: the split's VOC ids; split_ids[image_id] is the id (file stem) of image `image_id`.
    self.split_ids = list(ids)
    parsed = {}

    def parse(stem):
      if stem not in parsed:
        try:
          parsed[stem] = parse_voc_xml(os.path.join(root, 'Annotations', stem + '.xml'))
        except MalformedAnnotation as e:
          parsed[stem] = e
        except OSError as e:
          parsed[stem] = e
      return parsed[stem]

    super().__init__(name or f'voc:{root}', split, [])
    if classes is None:
      names = set()
      for n in sorted(os.listdir(os.path.join(root, 'Annotations'))):
        if n.endswith('.xml'):
          ann = parse(n[:-4])
          if isinstance(ann, MalformedAnnotation):
            self.problems.report('malformed_annotation', f'Annotations/{n}',
                                 f'{ann}; skipped')
          elif isinstance(ann, dict):
            names.update(o['name'] for o in ann['objects'] if o['name'])
      classes = sorted(names)
    self.class_names = list(classes)
    self.category_ids = list(range(1, len(self.class_names) + 1))
    class_index = {n: i + 1 for i, n in enumerate(self.class_names)}

    image_files = {}
    image_dir = os.path.join(root, 'JPEGImages')
    if os.path.isdir(image_dir):
      by_name = set(os.listdir(image_dir))
      for ext in reversed(_IMAGE_EXTENSIONS):
        for n in by_name:
          if n.endswith(ext):
            image_files[n[:-len(ext)]] = n

    self._entries = []
    for image_id, stem in enumerate(ids):
      xml_name = f'Annotations/{stem}.xml'
      ann = parse(stem)
      if isinstance(ann, MalformedAnnotation):
        self.problems.report('malformed_annotation', xml_name, f'{ann}; skipped')
        continue
      if isinstance(ann, OSError):
        self.problems.report('missing_annotation', xml_name,
                             f'{ann.strerror or ann}; image skipped')
        continue
      if stem not in image_files:
        self.problems.report('missing_image', f'JPEGImages/{stem}.jpg',
                             'no image file for this annotation; skipped')
        continue
      boxes, classes_, difficult = [], [], []
      for k, obj in enumerate(ann['objects']):
        what = f'object {k} {obj["name"]!r}'
        if obj['name'] not in class_index:
          self.problems.report('unknown_class', xml_name,
                               f'{what}: class not in {self.class_names}; dropped')
          continue
        if obj['bndbox'] is None:
          self.problems.report('invalid_box', xml_name, f'{what}: {obj["error"]}; dropped')
          continue
        xmin, ymin, xmax, ymax = obj['bndbox']
        coords = f'(xmin, ymin, xmax, ymax) = ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})'
        if not np.all(np.isfinite(obj['bndbox'])):
          self.problems.report('invalid_box', xml_name, f'{what}: {coords}; dropped')
          continue
        if xmax == xmin or ymax == ymin:
          self.problems.report('zero_area_box', xml_name,
                               f'{what}: {coords} has zero area; dropped')
          continue
        if xmax < xmin or ymax < ymin:
          self.problems.report('inverted_box', xml_name, f'{what}: {coords} inverted; dropped')
          continue
        boxes.append(box_ops.voc_to_boxes(xmin, ymin, xmax, ymax))
        classes_.append(class_index[obj['name']])
        difficult.append(obj['difficult'])
      self._entries.append({
          'image_id': image_id,
          'stem': stem,
          'image_file': f'JPEGImages/{image_files[stem]}',
          'xml_file': xml_name,
          'size': (ann['height'], ann['width']),
          'boxes': np.asarray(boxes, np.float32).reshape(-1, 4),
          'classes': np.asarray(classes_, np.int32),
          'difficult': np.asarray(difficult, bool),
      })

  def __len__(self):
    return len(self._entries)

  def image_file(self, index):
    """Path of candidate image `index`'s file."""
    return os.path.join(self.root, self._entries[index]['image_file'])

  def load(self, index):
    entry = self._entries[index]
    image_name = entry['image_file']
    image = decode.decode_image_file(os.path.join(self.root, image_name), self.problems,
                                     report_name=image_name)
    if image is None:
      return None
    height, width = image.shape[:2]
    records_lib.check_declared_size(entry['size'], height, width, self.problems,
                                    entry['xml_file'], '<size>')
    boxes, keep = records_lib.clean_boxes(entry['boxes'], height, width, self.problems,
                                          entry['xml_file'])
    record = records_lib.make_record(image, boxes, entry['classes'][keep],
                                     entry['difficult'][keep], entry['image_id'])
    return self._finish(record, entry['xml_file'])
