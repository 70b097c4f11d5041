"""Joins our bench lines (bench_inference / bench_train_step) with bench_torchvision's
lines from the same machine and prints one JSON line per matching configuration, with
the speed ratio.

    python bench/compare_torchvision.py OURS.jsonl [MORE.jsonl ...] --torchvision=TV.jsonl

Matching: our vgg16 with torchvision's vgg16 and our mobilenet_v2 with its
mobilenet_v3_fpn (the CPU-friendly models of each); inference with inference and
train_step with train_step (our tf_function and saved_model modes, not XLA: those are
listed apart); same height, width and batch; float32 with amp off and mixed_float16 with
amp on. Seconds per image are the medians of each line. Output:
  {"backbone", "torchvision_model", "mode", "precision", "height", "width", "batch",
   "ours_sec_per_image", "torchvision_sec_per_image", "speedup_over_torchvision"}
(speedup > 1: ours is faster).
"""

import argparse
import json
import sys

PAIRS = {'vgg16': 'vgg16', 'mobilenet_v2': 'mobilenet_v3_fpn'}
OUR_MODES = {'tf_function': 'inference', 'saved_model': 'inference',
             'train_step': 'train_step'}


def read_lines(paths):
  """JSON records of the files (lines that are not JSON objects are skipped)."""
  records = []
  for path in paths:
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line.startswith('{'):
          records.append(json.loads(line))
  return records


def compare(ours, torchvision):
  """Rows joining `ours` and `torchvision` records (see the module docstring)."""
  tv_index = {}
  for r in torchvision:
    if r.get('bench') == 'torchvision' and 'sec_per_image_median' in r:
      key = (r['model'], r['mode'], 'mixed_float16' if r['amp'] else 'float32',
             r['height'], r['width'], r['batch'])
      tv_index[key] = r['sec_per_image_median']
  rows = []
  for r in ours:
    mode = OUR_MODES.get(r.get('mode'))
    if not mode or r.get('backbone') not in PAIRS or 'sec_per_image_median' not in r:
      continue
    model = PAIRS[r['backbone']]
    key = (model, mode, r.get('precision', 'float32'), r['height'], r['width'], r['batch'])
    if key not in tv_index:
      continue
    ours_s, tv_s = r['sec_per_image_median'], tv_index[key]
    rows.append({'backbone': r['backbone'], 'our_mode': r['mode'],
                 'torchvision_model': model, 'mode': mode, 'precision': key[2],
                 'height': key[3], 'width': key[4], 'batch': key[5],
                 'ours_sec_per_image': ours_s, 'torchvision_sec_per_image': tv_s,
                 'speedup_over_torchvision': round(tv_s / ours_s, 4)})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('ours', nargs='+', help='Our bench JSON-lines files.')
  parser.add_argument('--torchvision', required=True, help="bench_torchvision's lines.")
  args = parser.parse_args(argv)
  try:
    rows = compare(read_lines(args.ours), read_lines([args.torchvision]))
  except (OSError, ValueError, KeyError) as e:  # unreadable file, bad JSON, missing field
    print(f'compare_torchvision.py: error: {type(e).__name__}: {e}', file=sys.stderr)
    return 2
  if not rows:
    print('no configuration appears in both', file=sys.stderr)
    return 1
  for row in rows:
    print(json.dumps(row))
  return 0


if __name__ == '__main__':
  sys.exit(main())
