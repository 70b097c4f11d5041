"""Dataset spec strings -> source objects.

    shapes[:key=value,...]            built-in synthetic data (`shapes.py`), e.g.
                                      shapes:image_size=160,train_images=500
    voc:DIR                           PASCAL VOC folder, or LabelImg's XML beside the
                                      images (`voc.py`)
    yolo:DIR                          YOLO text labels (`yolo.py`)
    tfrecord:GLOB                     TF Object Detection API tf.train.Example files
                                      (`tfrecord.py`; class names from `label_map`, a
                                      label_map.pbtxt, or the records' class texts)
    coco:ANNOTATIONS.json[:IMAGES_DIR]  COCO json (`coco.py`); IMAGES_DIR defaults to
                                      <folder of the json>/images
    tfds:NAME                         prepared TensorFlow Datasets data in data_dir
                                      (`tfds_source.py`), e.g. tfds:voc/2007

Paths are used as given (relative ones from the working directory); `data_dir` is only
the TFDS data_dir. Data without split files (voc / yolo folders without them, tfrecord)
has the splits 'all', 'train' and 'val' (`splits.py`; `val_fraction`).
"""

SPEC_HELP = ('shapes[:key=value,...] | voc:DIR | yolo:DIR | tfrecord:GLOB | '
             'coco:ANNOTATIONS.json[:IMAGES_DIR] | tfds:NAME')


def _parse_value(text):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def get_source(spec, split='train', classes=None, data_dir=None, seed=0, shapes_options=None,
               val_fraction=0.1, label_map=None, **options):
  """Makes the source a spec string names.

  Args:
    spec: see the module docstring.
    split: split name ('train', 'test', ... ; VOC also 'all'; ignored by coco; 'all',
      'train' or 'val' for data without split files).
    classes: optional list of class names: restricts and orders the classes (class id i is
      classes[i-1]); a comma-separated string is accepted too.
    data_dir: the TFDS data_dir (tfds specs only; default TFDS's own default).
    seed: generation seed (shapes only; shuffling is the pipeline's job).
    shapes_options: dict of `ShapesSource` keyword arguments (image_size, train_images,
      test_images, ...) used only when the spec is shapes; options in the spec string win.
    val_fraction: share of 'val' in the hashed split of data without split files.
    label_map: label_map.pbtxt file naming the classes (tfrecord specs only; optional).
    **options: extra keyword arguments for the source class (e.g. shapes' image_size).
  Returns:
    a `source.Source` (`.class_names`, `.num_images`, `.records()`, `.as_dataset()`,
    `.problems`, `.category_ids`).
  """
  if isinstance(classes, str):
    classes = [c.strip() for c in classes.split(',') if c.strip()]
  kind, _, rest = spec.partition(':')
  if kind == 'shapes':
    from faster_rcnn_tf.data.shapes import ShapesSource  # pylint: disable=g-import-not-at-top
    for item in filter(None, rest.split(',')):
      key, eq, value = item.partition('=')
      if not eq:
        raise ValueError(f'bad shapes option {item!r} in {spec!r}: use key=value')
      options[key.strip()] = _parse_value(value.strip())
    for key, value in (shapes_options or {}).items():
      options.setdefault(key, value)
    return ShapesSource(split=split, seed=seed, classes=classes, name=spec, **options)
  if not rest:
    raise ValueError(f'dataset spec {spec!r}: expected {SPEC_HELP}')
  if kind == 'voc':
    from faster_rcnn_tf.data.voc import VocSource  # pylint: disable=g-import-not-at-top
    return VocSource(rest, split=split, classes=classes, name=spec, val_fraction=val_fraction,
                     **options)
  if kind == 'yolo':
    from faster_rcnn_tf.data.yolo import YoloSource  # pylint: disable=g-import-not-at-top
    return YoloSource(rest, split=split, classes=classes, name=spec,
                      val_fraction=val_fraction, **options)
  if kind == 'tfrecord':
    from faster_rcnn_tf.data.tfrecord import TfRecordSource  # pylint: disable=g-import-not-at-top
    return TfRecordSource(rest, split=split, classes=classes, name=spec, label_map=label_map,
                          val_fraction=val_fraction, **options)
  if kind == 'coco':
    json_path, images_dir = rest, None
    marker = rest.lower().find('.json:')
    if marker >= 0:
      json_path, images_dir = rest[:marker + 5], rest[marker + 6:]
    from faster_rcnn_tf.data.coco import CocoSource  # pylint: disable=g-import-not-at-top
    return CocoSource(json_path, images_dir or None, split=split, classes=classes, name=spec, **options)
  if kind == 'tfds':
    from faster_rcnn_tf.data.tfds_source import TfdsSource  # pylint: disable=g-import-not-at-top
    return TfdsSource(rest, split=split, classes=classes, data_dir=data_dir, name=spec,
                      **options)
  raise ValueError(f'unknown dataset kind {kind!r} in {spec!r}: expected {SPEC_HELP}')
