"""Summarizes a dataset and draws a few of its images with their boxes.

    python -m faster_rcnn_tf.data.inspect --dataset=SPEC [--split=SPLIT] [--output_dir=DIR]
        [--classes=a,b] [--data_dir=TFDS_DIR] [--max_images=N] [--num_drawn=8]
        [--val_fraction=0.1] [--label_map=label_map.pbtxt]
        [--flagfile=configs/NAME.cfg] [--min_size=...] [--anchor_scales=...] ...

Reads every image of the split (decoding it, so image problems are found too), prints one
JSON object:

    {"dataset", "split", "class_names", "candidate_images", "images", "skipped_images",
     "objects", "difficult", "per_class": {name: count}, "images_without_objects",
     "min_image_size": [h, w], "max_image_size": [h, w],
     "problems": {kind: {"count", "examples": [file names]}}, "grid": PNG path}

and writes DIR/inspect_<dataset>_<split>.png with the first `num_drawn` images, boxes and
class names drawn ('*' marks difficult objects).

With --anchor_report (the default) the object also has "anchors" (`anchor_fit`): the
ground-truth box sizes and aspect ratios in the resized image (--min_size, --max_size),
the anchor recall (fraction of boxes whose best anchor reaches IoU 0.5 / 0.7) of the
configured anchors (--backbone, --anchor_base_size, --anchor_scales, --anchor_ratios) and
of what train.py's --anchor_scales=auto / --anchor_ratios=auto would choose. A training
config can be given with --flagfile: the flags inspect does not have are ignored there.
"""

import json
import os
import re
import sys

import numpy as np
from absl import flags
from PIL import Image

from faster_rcnn_tf import cli
from faster_rcnn_tf import config as config_lib
from faster_rcnn_tf import config_flags
from faster_rcnn_tf import visualize
from faster_rcnn_tf.data import anchor_fit
from faster_rcnn_tf.data import records as R
from faster_rcnn_tf.data import registry

_GRID_CELL = 384  # drawn images are shrunk to at most this side in the grid


def summarize(source, max_images=None, num_drawn=8, collect=None, skip_difficult=True):
  """Counts what a source yields.

  Args:
    source: a dataset source.
    max_images: stop after this many records (None: all).
    num_drawn: how many of the first records to draw.
    collect: None, or a list that gets `anchor_fit.image_boxes` of every record.
    skip_difficult: whether those leave difficult boxes out.
  Returns:
    (summary dict as in the module docstring without 'grid', list of drawn uint8 images).
  """
  per_class = np.zeros(len(source.class_names), np.int64)
  images = objects = difficult = empty = 0
  min_size, max_size = None, None
  drawn = []
  for record in source.records():
    images += 1
    classes = record[R.CLASSES]
    objects += len(classes)
    difficult += int(record[R.DIFFICULT].sum())
    empty += int(len(classes) == 0)
    per_class += np.bincount(classes - 1, minlength=len(per_class))[:len(per_class)]
    size = record[R.IMAGE].shape[:2]
    if collect is not None:
      collect.append(anchor_fit.image_boxes(record, skip_difficult))
    min_size = size if min_size is None else np.minimum(min_size, size)
    max_size = size if max_size is None else np.maximum(max_size, size)
    if len(drawn) < num_drawn:
      labels = [source.class_names[c - 1] + ('*' if d else '')
                for c, d in zip(classes, record[R.DIFFICULT])]
      image = visualize.draw_boxes(record[R.IMAGE], record[R.BOXES], labels)
      pil = Image.fromarray(image)
      pil.thumbnail((_GRID_CELL, _GRID_CELL))
      drawn.append(np.asarray(pil))
    if max_images and images >= max_images:
      break
  summary = {
      'dataset': source.name,
      'split': source.split,
      'class_names': list(source.class_names),
      'candidate_images': int(source.num_images),
      'images': images,
      'skipped_images': int(source.num_images) - images if not max_images else None,
      'objects': objects,
      'difficult': difficult,
      'per_class': {n: int(c) for n, c in zip(source.class_names, per_class)},
      'images_without_objects': empty,
      'min_image_size': None if min_size is None else [int(v) for v in min_size],
      'max_image_size': None if max_size is None else [int(v) for v in max_size],
      'problems': source.problems.summary(),
  }
  return summary, drawn


def run(dataset, split='train', output_dir='.', classes=None, data_dir=None, seed=0,
        max_images=None, num_drawn=8, anchors=None, val_fraction=0.1, label_map=None):
  """What the command does; returns the summary dict (with 'grid', the PNG path or None).

  anchors: None (no anchor report) or a dict of the training settings: min_size (int or
  sequence), max_size, skip_difficult, backbone, anchor_base_size, anchor_scales and
  anchor_ratios (lists of strings as the flags give them, 'auto' allowed).
  val_fraction, label_map: as train.py's flags (data without split files, tfrecord:).
  """
  source = registry.get_source(dataset, split, classes=classes, data_dir=data_dir, seed=seed,
                               val_fraction=val_fraction, label_map=label_map)
  images = [] if anchors else None
  summary, drawn = summarize(source, max_images=max_images, num_drawn=num_drawn,
                             collect=images,
                             skip_difficult=bool(anchors and anchors['skip_difficult']))
  if anchors:
    sizes = config_lib.min_sizes_of(anchors['min_size'])
    resized = anchor_fit.resize_all(images, sizes, anchors['max_size'])
    summary['anchors'] = dict(
        min_sizes=list(sizes), max_size=anchors['max_size'],
        **anchor_fit.inspect_anchors(
            resized, anchors['anchor_base_size'], anchor_fit.feature_stride(
                anchors['backbone']), anchors['anchor_scales'], anchors['anchor_ratios'],
            seed=seed))
  summary['grid'] = None
  if drawn and output_dir:
    os.makedirs(output_dir, exist_ok=True)
    safe = re.sub(r'[^A-Za-z0-9._-]+', '_', f'{dataset}_{split}').strip('_')[-100:]
    summary['grid'] = visualize.save_grid(
        drawn, os.path.join(output_dir, f'inspect_{safe}.png'))
  return summary


def define_flags():
  flags.DEFINE_string('dataset', 'shapes', registry.SPEC_HELP)
  flags.DEFINE_string('split', 'train', 'Split to inspect.')
  flags.DEFINE_string('output_dir', '.', 'Where the PNG goes ("" for none).')
  flags.DEFINE_list('classes', None, 'Class names to keep (default: all).')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir (tfds: datasets).')
  flags.DEFINE_integer('seed', 0, 'Generation seed (shapes).')
  flags.DEFINE_integer('max_images', 0, 'Stop after this many images (0: all).')
  flags.DEFINE_integer('num_drawn', 8, 'Images drawn into the PNG.')
  flags.DEFINE_float('val_fraction', 0.1, "Share of 'val' in data without split files.")
  flags.DEFINE_string('label_map', None, 'label_map.pbtxt of a tfrecord: dataset.')
  flags.DEFINE_bool('anchor_report', True, 'Report box shapes and anchor recall.')
  # The training flags the anchor report reads (same names and defaults as train.py's).
  flags.DEFINE(config_flags.SizesParser(), 'min_size', 600, 'Training --min_size.',
               serializer=config_flags.SizesSerializer())
  flags.DEFINE_integer('max_size', 1000, 'Training --max_size.')
  flags.DEFINE_bool('skip_difficult', True, 'Training --skip_difficult.')
  flags.DEFINE_string('backbone', 'vgg16', 'Training --backbone (its feature stride).')
  flags.DEFINE_integer('anchor_base_size', 16, 'Training --anchor_base_size.')
  flags.DEFINE_list('anchor_scales', ['8', '16', '32'], "Training --anchor_scales ('auto').")
  flags.DEFINE_list('anchor_ratios', ['0.5', '1.0', '2.0'],
                    "Training --anchor_ratios ('auto').")


def parse_flags(argv):
  """absl parsing where flags inside --flagfile files that inspect lacks are ignored (a
  training config names many); on the command line itself they are errors (one line,
  exit status 2)."""
  return config_flags.parse_argv(flags.FLAGS, argv, 'inspect')


def main(argv):
  del argv
  f = flags.FLAGS
  anchors = None
  if f.anchor_report:
    try:
      for name in ('anchor_scales', 'anchor_ratios'):
        anchor_fit.parse_auto(f[name].value)
    except ValueError as e:
      sys.stderr.write(f'inspect: error: --{name}: {e}\n')
      return 2
    anchors = {name: f[name].value for name in (
        'min_size', 'max_size', 'skip_difficult', 'backbone', 'anchor_base_size',
        'anchor_scales', 'anchor_ratios')}
  try:
    summary = run(f.dataset, f.split, f.output_dir, f.classes, f.data_dir, f.seed,
                  f.max_images or None, f.num_drawn, anchors=anchors,
                  val_fraction=f.val_fraction, label_map=f.label_map)
  except (ValueError, KeyError, FileNotFoundError) as e:  # a bad spec, folder or file
    sys.stderr.write(f'inspect: error: --dataset={f.dataset} --split={f.split}: {e}\n')
    return 2
  sys.stdout.write(json.dumps(summary) + '\n')
  sys.stdout.flush()
  return 0


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, 'inspect', flags_parser=parse_flags)
