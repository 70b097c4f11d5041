"""YOLO text-label folder source (`yolo:DIR`).

Layouts (image files: .jpg, .jpeg, .png, .bmp, any case):
    DIR/images/[SUB/]<name>.jpg  with  DIR/labels/[SUB/]<name>.txt     (mirrored folders)
    DIR/[SUB/]<name>.jpg         with  DIR/[SUB/]<name>.txt            (label beside image)
One line per object in a label file: `class cx cy w h`, the class a 0-based index into the
class names, the box centre and size normalized by the image's width and height. Extra
columns (segmentation polygons) are not boxes: such a line is 'invalid_box', dropped. An
image without a label file, or with an empty one, is a background image ('no_objects').

Class names: DIR/classes.txt (one name a line; also DIR/labels/classes.txt, where LabelImg
writes it), else the `names:` of DIR/data.yaml (or dataset.yaml): a list (`[a, b]` or one
`- a` a line) or a mapping (`0: a` a line). With `classes` given, class_names = classes and
objects of other classes are dropped ('unknown_class'); a class index beyond the names is
'unknown_class' too.

Splits: DIR/images/<split>/ when it exists (the common `images/train`, `images/val`
layout): the split is that folder (and when DIR/images/ has such split folders, a split
without one is an error). Otherwise the folder has the splits 'all', 'train', 'val' (also
called 'test'), train / val chosen by a hash of each image's key (`splits.py`,
`val_fraction`).
The key of an image is its path relative to the image folder (DIR/images or DIR), without
extension, with '/' separators. image_id = the index of the image in the sorted list of
keys of the split's folder (for a hashed split, of 'all').

Boxes: (cx - w/2, cy - h/2, cx + w/2, cy + h/2) times the decoded image's size, as yxyx
pixels, then `records.clean_boxes` (zero size, inverted, outside, clipped: reported).
"""

import os
import re

import numpy as np

from faster_rcnn_tf.data import decode
from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data import splits
from faster_rcnn_tf.data.source import Source

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
_YAML_NAMES = ('data.yaml', 'dataset.yaml', 'data.yml', 'dataset.yml')


def _unquote(text):
  text = text.strip()
  if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
    return text[1:-1]
  return text


def _strip_comment(line):
  """The line without a ' #' comment (a '#' inside quotes is kept)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      if ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
    elif ch == '#' and (i == 0 or line[i - 1] in ' \t'):
      return line[:i]
  return line


def parse_yaml_names(text):
  """The class names of a YOLO data.yaml's `names:` entry (without a YAML library).

  Understands `names: [a, 'b c']`, a block list (`- a` lines) and a block mapping
  (`0: a` lines, ordered by the integer key).

  Returns:
    list of str, or None when there is no `names:` entry.
  Raises:
    ValueError: a `names:` entry of another form.
  """
  lines = [_strip_comment(l).rstrip() for l in text.splitlines()]
  for i, line in enumerate(lines):
    match = re.match(r'^names\s*:(.*)$', line)
    if not match:
      continue
    rest = match.group(1).strip()
    if rest.startswith('['):
      if not rest.endswith(']'):
        raise ValueError(f'names: {rest!r} is not a one-line [a, b, ...] list')
      inner = rest[1:-1].strip()
      return [_unquote(v) for v in inner.split(',')] if inner else []
    if rest.startswith('{'):
      if not rest.endswith('}'):
        raise ValueError(f'names: {rest!r} is not a one-line {{0: a, ...}} mapping')
      pairs = [p.split(':', 1) for p in rest[1:-1].split(',') if p.strip()]
      return [_unquote(v) for _, v in sorted(pairs, key=lambda kv: int(kv[0]))]
    if rest:
      raise ValueError(f'names: {rest!r} is neither a list nor a mapping')
    items, mapping = [], {}
    for block in lines[i + 1:]:
      if not block.strip():
        continue
      if not block[0].isspace() and not block.startswith('-'):
        break
      entry = block.strip()
      if entry.startswith('-'):
        items.append(_unquote(entry[1:]))
      else:
        key, colon, value = entry.partition(':')
        if not colon:
          raise ValueError(f'names: line {entry!r} is neither "- name" nor "index: name"')
        mapping[int(key)] = _unquote(value)
    if mapping:
      return [mapping[k] for k in sorted(mapping)]
    return items
  return None


def read_class_names(root):
  """Class names of a YOLO folder (see the module docstring); FileNotFoundError if none."""
  for rel in ('classes.txt', os.path.join('labels', 'classes.txt')):
    path = os.path.join(root, rel)
    if os.path.isfile(path):
      with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]
  for rel in _YAML_NAMES:
    path = os.path.join(root, rel)
    if os.path.isfile(path):
      with open(path, encoding='utf-8') as f:
        text = f.read()
      try:
        import yaml  # pylint: disable=g-import-not-at-top
      except ImportError:
        yaml = None
      try:
        if yaml is not None:
          names = (yaml.safe_load(text) or {}).get('names')
          if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        else:
          names = parse_yaml_names(text)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f'{path}: cannot read the class names: {e}') from None
      if names is None:
        raise ValueError(f'{path}: no "names:" entry')
      return [str(n) for n in names]
  raise FileNotFoundError(f'YOLO folder {root}: no class names: expected classes.txt or '
                          f'data.yaml with a "names:" entry')


def _list_images(folder):
  """Sorted keys (relative path without extension, '/'-separated) -> relative file name."""
  found = {}
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames.sort()
    for n in sorted(filenames):
      stem, ext = os.path.splitext(n)
      if ext.lower() in IMAGE_EXTENSIONS:
        rel = os.path.relpath(os.path.join(dirpath, n), folder).replace(os.sep, '/')
        key = rel[:-len(ext)]
        found.setdefault(key, rel)
  return dict(sorted(found.items()))


def parse_label_file(path):
  """Rows of a YOLO label file.

  Returns:
    (rows, errors): rows a list of (line number, class index, cx, cy, w, h) with floats,
    errors a list of (line number, text) of lines that are not 5 numbers.
  """
  rows, errors = [], []
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 5:
        errors.append((number, f'{len(fields)} fields, expected "class cx cy w h"'))
        continue
      try:
        cls = float(fields[0])
        values = [float(v) for v in fields[1:]]
      except ValueError:
        errors.append((number, f'{line.strip()!r} is not numeric'))
        continue
      if cls != int(cls) or cls < 0:
        errors.append((number, f'class {fields[0]!r} is not a non-negative integer'))
        continue
      rows.append((number, int(cls), *values))
  return rows, errors


class YoloSource(Source):
  """YOLO folder source; see the module docstring."""

  def __init__(self, root, split='train', classes=None, name=None,
               val_fraction=splits.DEFAULT_VAL_FRACTION):
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
      raise FileNotFoundError(f'YOLO folder {root} does not exist')
    self.root = root
    file_names = read_class_names(root)
    super().__init__(name or f'yolo:{root}', split, classes or file_names)
    class_index = {n: i + 1 for i, n in enumerate(self.class_names)}

    mirrored = os.path.isdir(os.path.join(root, 'images'))
    image_root = os.path.join(root, 'images') if mirrored else root
    label_root = os.path.join(root, 'labels') if mirrored else root
    split_dir = os.path.join(image_root, split)
    if mirrored and split != 'all' and os.path.isdir(split_dir):
      image_root = os.path.join(image_root, split)
      label_root = os.path.join(label_root, split)
      images = _list_images(image_root)
      keys = list(images)
      image_ids = list(range(len(keys)))
    else:
      images = _list_images(image_root)
      keys = list(images)
      subfolders = sorted(d for d in os.listdir(image_root)
                          if os.path.isdir(os.path.join(image_root, d))) if mirrored else []
      if split != 'all' and set(subfolders) & {'train', 'val', 'valid', 'test'}:
        raise FileNotFoundError(f'YOLO folder {root}: no images/{split}/; the splits are '
                                f'{subfolders + ["all"]}')
      image_ids = splits.select(keys, split, val_fraction)
      if split != 'all':
        splits.announce(root, split, len(image_ids), len(keys), val_fraction)
    self.image_root = image_root
    #: keys[image_id] is the key of image `image_id` (see the module docstring).
    self.keys = keys
    prefix = os.path.relpath(image_root, root).replace(os.sep, '/')
    label_prefix = os.path.relpath(label_root, root).replace(os.sep, '/')
    prefix = '' if prefix == '.' else prefix + '/'
    label_prefix = '' if label_prefix == '.' else label_prefix + '/'

    self._entries = []
    for image_id in image_ids:
      key = keys[image_id]
      label_name = f'{label_prefix}{key}.txt'
      rows = []
      label_path = os.path.join(label_root, key + '.txt')
      if os.path.isfile(label_path):
        rows, errors = parse_label_file(label_path)
        for number, text in errors:
          self.problems.report('invalid_box', label_name, f'line {number}: {text}; dropped')
      boxes, classes_ = [], []
      for number, cls, cx, cy, w, h in rows:
        class_name = file_names[cls] if cls < len(file_names) else None
        if class_name not in class_index:
          what = (f'class index {cls} beyond the {len(file_names)} class names'
                  if class_name is None else f'class {class_name!r} not in {self.class_names}')
          self.problems.report('unknown_class', label_name,
                               f'line {number}: {what}; dropped')
          continue
        boxes.append((cx, cy, w, h))
        classes_.append(class_index[class_name])
      self._entries.append({
          'image_id': image_id,
          'key': key,
          'image_file': prefix + images[key],
          'label_file': label_name,
          'boxes': np.asarray(boxes, np.float64).reshape(-1, 4),
          'classes': np.asarray(classes_, np.int32),
      })

  def __len__(self):
    return len(self._entries)

  def image_file(self, index):
    """Path of candidate image `index`'s file."""
    return os.path.join(self.root, self._entries[index]['image_file'])

  def image_key(self, index):
    """The name that hashing splits by (`splits.py`)."""
    return self._entries[index]['key']

  def graph_inputs(self):
    return self.entry_graph_inputs('cxcywh')

  def load(self, index):
    entry = self._entries[index]
    image = decode.decode_image_file(self.image_file(index), self.problems,
                                     report_name=entry['image_file'])
    if image is None:
      return None
    height, width = image.shape[:2]
    cx, cy, w, h = entry['boxes'].T
    boxes = np.stack([(cy - h / 2) * height, (cx - w / 2) * width,
                      (cy + h / 2) * height, (cx + w / 2) * width], axis=-1)
    boxes, keep = records_lib.clean_boxes(boxes, height, width, self.problems,
                                          entry['label_file'])
    record = records_lib.make_record(image, boxes, entry['classes'][keep], None,
                                     entry['image_id'])
    return self._finish(record, entry['label_file'])
