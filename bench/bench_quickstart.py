"""The README's main job, timed end to end: `python bench/bench_quickstart.py`.

Runs `train.py --flagfile=configs/shapes_quickstart.cfg` in a fresh model_dir, and prints
one JSON line with the wall time (start-up, training, evaluation), the VOC07 mAP@0.5 it
printed, and the issue's budget (15 minutes on a 2-core CPU, mAP >= 0.90) beside them.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_training(config, extra=(), echo_tail=3000):
  """Runs train.py on `config` (+ extra flags) in a fresh model_dir; returns a record
  with the return code, wall seconds and the VOC07 mAP@0.5 it printed (None if none)."""
  model_dir = tempfile.mkdtemp(prefix=os.path.splitext(os.path.basename(config))[0] + '_')
  cmd = [sys.executable, 'train.py', f'--flagfile={config}', f'--model_dir={model_dir}',
         *extra]
  start = time.time()
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.time() - start
  sys.stderr.write(result.stdout[-echo_tail:])
  if result.returncode:
    sys.stderr.write(result.stderr[-echo_tail:])
  found = re.search(r'VOC07 mAP@0\.5 on .*: ([\d.]+)', result.stdout)
  return {'config': config, 'extra': list(extra), 'returncode': result.returncode,
          'wall_seconds': round(wall, 1),
          'map50_voc07': float(found.group(1)) if found else None,
          'cpus': os.cpu_count(), 'model_dir': model_dir}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--config', default='configs/shapes_quickstart.cfg')
  parser.add_argument('--extra', nargs='*', default=[], help='extra train.py flags')
  args = parser.parse_args()
  record = run_training(args.config, args.extra)
  record = dict({'bench': 'quickstart'}, **record)
  record.update(budget_seconds=900, fraction_of_budget=round(record['wall_seconds'] / 900, 3),
                target_map50=0.90)
  print(json.dumps(record))
  return record['returncode']


if __name__ == '__main__':
  sys.exit(main())
