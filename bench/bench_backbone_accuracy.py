"""Accuracy of the CPU backbone against VGG16 on the built-in shapes, same recipe.

    python bench/bench_backbone_accuracy.py
        [--configs=configs/shapes_mobilenet_v2.cfg,configs/shapes_vgg16.cfg] [--extra ...]

Trains each config with train.py in a fresh model_dir (both from scratch: the ImageNet
weights need a download) and prints one JSON line per run (wall seconds, VOC07 mAP@0.5
on the shapes test split), then one comparing each run with the last config's (the
reference, VGG16): the mAP difference and the issue's goal (within 0.02 or better).
"""

import argparse
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import bench_quickstart  # pylint: disable=wrong-import-position

GOAL_MAP_GAP = 0.02


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs',
                      default='configs/shapes_mobilenet_v2.cfg,configs/shapes_vgg16.cfg',
                      help='Comma-separated; the last one is the reference.')
  parser.add_argument('--extra', nargs='*', default=[], help='extra train.py flags for all')
  args = parser.parse_args()
  configs = [c for c in args.configs.split(',') if c]
  records = []
  for config in configs:
    record = dict({'bench': 'backbone_accuracy'}, **bench_quickstart.run_training(
        config, args.extra))
    print(json.dumps(record), flush=True)
    records.append(record)
  reference = records[-1]
  for record in records[:-1]:
    gap = None
    if record['map50_voc07'] is not None and reference['map50_voc07'] is not None:
      gap = round(record['map50_voc07'] - reference['map50_voc07'], 4)
    print(json.dumps({
        'bench': 'backbone_accuracy_comparison', 'config': record['config'],
        'reference': reference['config'], 'map50_voc07': record['map50_voc07'],
        'reference_map50_voc07': reference['map50_voc07'], 'map_difference': gap,
        'goal': f'difference >= -{GOAL_MAP_GAP}',
        'goal_met': gap is not None and gap >= -GOAL_MAP_GAP,
        'wall_seconds_ratio': round(record['wall_seconds'] / reference['wall_seconds'], 3)}))
  return max(r['returncode'] for r in records)


if __name__ == '__main__':
  sys.exit(main())
