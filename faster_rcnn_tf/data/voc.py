"""PASCAL VOC folder source (`voc:DIR`), also for LabelImg folders.

Layouts:
    DIR/Annotations/<id>.xml          VOC XML (size, object/name, bndbox, difficult)
    DIR/JPEGImages/<id>.jpg           (.jpeg, .png, .bmp and upper-case variants are found too)
    DIR/ImageSets/Main/<split>.txt    one image id per line (first token of each line);
                                      optional (see below)
  or, as LabelImg saves them, DIR/<id>.xml beside DIR/<id>.jpg in one folder (an image
  whose stem differs from its XML's is found through the XML's <filename>).

image_id (evaluation relies on this): the 0-based index of the image's line among the
non-blank lines of ImageSets/Main/<split>.txt. Images skipped for problems keep their index,
so ids never shift. Special split 'all': every annotation XML sorted by file name,
image_id = index in that sorted list. A folder without split files (no ImageSets/Main/*.txt,
or the LabelImg layout) has the splits 'all', 'train' and 'val' (also called 'test'):
train / val are chosen by
a hash of each id (`splits.py`, `val_fraction`), image_id = the index in the 'all' list, and
a line on stderr says so.

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
from faster_rcnn_tf.data import splits
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
    dict with 'width', 'height' (ints, 0 when absent or unparseable), 'filename' (the
    <filename> text, '' when absent) and 'objects': a list
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
  filename = (root.findtext('filename') or '').strip()
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
  return {'width': width, 'height': height, 'filename': filename, 'objects': objects}


def find_layout(root):
  """(annotation folder, image folder) relative to a VOC root: ('Annotations',
  'JPEGImages'), or ('', '') for the LabelImg layout (XML beside the images).

  Raises:
    FileNotFoundError: neither layout.
  """
  if os.path.isdir(os.path.join(root, 'Annotations')):
    return 'Annotations', 'JPEGImages'
  if any(n.endswith('.xml') for n in os.listdir(root)):
    return '', ''
  raise FileNotFoundError(f'{root} is not a VOC folder: no Annotations/ inside, and no '
                          '.xml files beside the images (LabelImg layout)')


def _annotation_stems(root, annotation_dir='Annotations'):
  names = os.listdir(os.path.join(root, annotation_dir))
  return sorted(os.path.splitext(n)[0] for n in names if n.endswith('.xml'))


def split_files(root):
  """Names of the split files of a VOC folder (ImageSets/Main/*.txt stems), sorted."""
  main = os.path.join(root, 'ImageSets', 'Main')
  if not os.path.isdir(main):
    return []
  return sorted(os.path.splitext(n)[0] for n in os.listdir(main) if n.endswith('.txt'))


def read_split_ids(root, split, annotation_dir='Annotations'):
  """Image ids of a split, in file order (the index is the image_id); see module docstring.

  For a folder without split files use `select_split`.
  """
  if split == 'all':
    return _annotation_stems(root, annotation_dir)
  path = os.path.join(root, 'ImageSets', 'Main', f'{split}.txt')
  if not os.path.exists(path):
    raise FileNotFoundError(f'VOC split file {path} not found; available splits: '
                            f'{split_files(root) + ["all"]}')
  with open(path, encoding='utf-8') as f:
    return [line.split()[0] for line in f if line.strip()]


def select_split(root, split, annotation_dir='Annotations',
                 val_fraction=splits.DEFAULT_VAL_FRACTION):
  """(ids, image_ids, hashed) of a split: the ids listed (split_ids), the image_ids of the
  split's images (indices into ids) and whether the split was chosen by hashing."""
  if split == 'all' or split_files(root):
    ids = read_split_ids(root, split, annotation_dir)
    return ids, list(range(len(ids))), False
  ids = _annotation_stems(root, annotation_dir)
  return ids, splits.select(ids, split, val_fraction), True


class VocSource(Source):
  """PASCAL VOC / LabelImg source; see the module docstring for ids, classes and boxes.

  val_fraction: share of a split-less folder's images in its 'val' split (`splits.py`).
  """

  def __init__(self, root, split='train', classes=None, name=None,
               val_fraction=splits.DEFAULT_VAL_FRACTION):
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
      raise FileNotFoundError(f'VOC folder {root} does not exist')
    ann_dir, image_dir = find_layout(root)
    ids, image_ids, hashed = select_split(root, split, ann_dir, val_fraction)
    if hashed:
      splits.announce(root, split, len(image_ids), len(ids), val_fraction)
    self.root = root
    #: the ids listed for the split; split_ids[image_id] is the id (file stem) of image
    #: `image_id` (for a hashed split, all ids: image_ids index the 'all' list).
    self.split_ids = list(ids)
    ann_prefix = ann_dir + '/' if ann_dir else ''
    image_prefix = image_dir + '/' if image_dir else ''
    parsed = {}

    def parse(stem):
      if stem not in parsed:
        try:
          parsed[stem] = parse_voc_xml(os.path.join(root, ann_dir, stem + '.xml'))
        except MalformedAnnotation as e:
          parsed[stem] = e
        except OSError as e:
          parsed[stem] = e
      return parsed[stem]

    super().__init__(name or f'voc:{root}', split, [])
    if classes is None:
      names = set()
      for n in sorted(os.listdir(os.path.join(root, ann_dir))):
        if n.endswith('.xml'):
          ann = parse(n[:-4])
          if isinstance(ann, MalformedAnnotation):
            self.problems.report('malformed_annotation', f'{ann_prefix}{n}',
                                 f'{ann}; skipped')
          elif isinstance(ann, dict):
            names.update(o['name'] for o in ann['objects'] if o['name'])
      classes = sorted(names)
    self.class_names = list(classes)
    self.category_ids = list(range(1, len(self.class_names) + 1))
    class_index = {n: i + 1 for i, n in enumerate(self.class_names)}

    image_files = {}
    by_name = set()
    if os.path.isdir(os.path.join(root, image_dir)):
      by_name = set(os.listdir(os.path.join(root, image_dir)))
      for ext in reversed(_IMAGE_EXTENSIONS):
        for n in by_name:
          if n.endswith(ext):
            image_files[n[:-len(ext)]] = n

    self._entries = []
    for image_id in image_ids:
      stem = ids[image_id]
      xml_name = f'{ann_prefix}{stem}.xml'
      ann = parse(stem)
      if isinstance(ann, MalformedAnnotation):
        self.problems.report('malformed_annotation', xml_name, f'{ann}; skipped')
        continue
      if isinstance(ann, OSError):
        self.problems.report('missing_annotation', xml_name,
                             f'{ann.strerror or ann}; image skipped')
        continue
      image_name = image_files.get(stem)
      if image_name is None and os.path.basename(ann['filename']) in by_name:
        image_name = os.path.basename(ann['filename'])  # LabelImg: <filename> names it
      if image_name is None:
        self.problems.report('missing_image', f'{image_prefix}{stem}.jpg',
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
          'image_file': f'{image_prefix}{image_name}',
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

  def image_key(self, index):
    """The name that hashing splits by (`splits.py`): the id (XML file stem)."""
    return self._entries[index]['stem']

  def graph_inputs(self):
    return self.entry_graph_inputs('yxyx')

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
