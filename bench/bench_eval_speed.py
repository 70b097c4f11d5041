"""Host-side speed of two pieces that run outside the model: VOC scoring and the shapes data.

    python bench/bench_eval_speed.py [--images=2000] [--detections_per_image=50]
        [--classes=20] [--shapes_images=100] [--shapes_size=128] [--repeats=3]

Prints one JSON line per measurement:
  "mode": "voc_eval"        `evaluate_voc` (area AP and VOC07 11-point AP) on a synthetic
                            split: --images images with 1..5 boxes each and
                            --detections_per_image noisy copies of them (2000 x 50: 100k
                            detections, VOC07 test's size); seconds (median of --repeats),
                            detections per second, and the time over a numpy sort of all
                            scores of the same run (over_sort: how many sorts it costs);
  "mode": "shapes_records"  the built-in shapes source drawing --shapes_images images;
                            milliseconds per image and the time over filling the same
                            pixels with numpy random values (over_random_fill).
"""

import argparse
import os
import statistics
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=2000, help='Images of the VOC split.')
  parser.add_argument('--detections_per_image', type=int, default=50)
  parser.add_argument('--classes', type=int, default=20)
  parser.add_argument('--shapes_images', type=int, default=100,
                      help='Shapes images drawn (0: skip).')
  parser.add_argument('--shapes_size', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--threads', type=int, default=common.DEFAULT_THREADS)
  parser.add_argument('--seed', type=int, default=0)
  return parser


def synthetic_split(images, per_image, classes, seed=0):
  """(gt, detections) of a random split: 1..5 boxes an image in a 400-pixel square,
  `per_image` detections that are copies of them moved by about 8 pixels."""
  import numpy as np
  rng = np.random.default_rng(seed)
  gt, ids, cls, scores, boxes = {}, [], [], [], []
  for i in range(images):
    n = int(rng.integers(1, 6))
    yx = rng.uniform(0, 400, (n, 2))
    b = np.concatenate([yx, yx + rng.uniform(10, 100, (n, 2))], axis=1)
    c = rng.integers(1, classes + 1, n)
    gt[i] = {'boxes': b, 'classes': c, 'difficult': rng.random(n) < 0.1}
    src = rng.integers(0, n, per_image)
    ids += [i] * per_image
    cls.append(c[src])
    scores.append(rng.random(per_image))
    boxes.append(b[src] + rng.normal(0, 8, (per_image, 4)))
  dets = {'image_ids': np.array(ids), 'classes': np.concatenate(cls),
          'scores': np.concatenate(scores), 'boxes': np.concatenate(boxes)}
  return gt, dets


def _median_seconds(fn, repeats):
  _, times = common.time_fn(fn, 1, max(1, repeats))
  return statistics.median(times)


def run(args):
  import numpy as np
  from faster_rcnn_tf.evaluation.voc_metrics import evaluate_voc
  if args.images <= 0 or args.detections_per_image <= 0:
    raise ValueError('--images and --detections_per_image must be positive')
  records = []
  gt, dets = synthetic_split(args.images, args.detections_per_image, args.classes, args.seed)
  count = len(dets['scores'])
  sort_s = _median_seconds(lambda: np.argsort(-dets['scores'], kind='stable'), args.repeats)
  for metric, use_07 in (('voc', False), ('voc07', True)):
    result = {}

    def score(use_07=use_07, result=result):
      result.update(evaluate_voc(gt, dets, args.classes, use_07_metric=use_07))

    seconds = _median_seconds(score, args.repeats)
    records.append(common.emit({
        'bench': 'eval_speed', 'mode': 'voc_eval', 'metric': metric, 'images': args.images,
        'detections': count, 'classes': args.classes, 'repeats': args.repeats,
        'sec_median': common._round(seconds),  # pylint: disable=protected-access
        'detections_per_s': common._round(count / seconds),  # pylint: disable=protected-access
        'sort_sec_median': common._round(sort_s),  # pylint: disable=protected-access
        'over_sort': common._round(seconds / sort_s, 4),  # pylint: disable=protected-access
        'map': common._round(float(result['map']), 4)}))  # pylint: disable=protected-access
  if args.shapes_images > 0:
    from faster_rcnn_tf.data import shapes
    n, side = args.shapes_images, args.shapes_size
    source = shapes.ShapesSource('train', seed=args.seed, image_size=side, train_images=n)
    draw_s = _median_seconds(lambda: list(source.records()), args.repeats)
    rng = np.random.default_rng(args.seed)
    fill_s = _median_seconds(
        lambda: [rng.integers(0, 256, (side, side, 3), np.uint8) for _ in range(n)],
        args.repeats)
    records.append(common.emit({
        'bench': 'eval_speed', 'mode': 'shapes_records', 'images': n, 'image_size': side,
        'repeats': args.repeats,
        'ms_per_image': common._round(1000 * draw_s / n),  # pylint: disable=protected-access
        'images_per_s': common._round(n / draw_s),  # pylint: disable=protected-access
        'over_random_fill': common._round(draw_s / fill_s, 4)}))  # pylint: disable=protected-access
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
