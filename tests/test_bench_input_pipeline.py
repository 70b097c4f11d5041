"""Smoke test of bench/bench_input_pipeline.py at a toy size: folder and TFRecord, 1 and 2
cores (child processes pinned to 1 and 2 CPUs), in one run. Only the fields and their
consistency are checked, not the speeds."""

import json
import os

from tests import run_helpers
from tests.test_data_voc import _shared


def test_folder_and_tfrecord_on_one_and_two_cores():
  result = run_helpers.run_script(
      os.path.join('bench', 'bench_input_pipeline.py'), f'--bccd_dir={_shared("bccd")}',
      '--datasets=bccd,bccd_python,bccd_tfrecord', '--cores=1,2', '--num_batches=2',
      '--min_size=64', '--max_size=96', '--train_backbone=', '--num_shards=2', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith('{')]
  measured = {(l['dataset'], l['cores']): l['images_per_s'] for l in lines
              if l['bench'] == 'input_pipeline'}
  assert sorted(measured) == [(d, c) for d in ('bccd', 'bccd_python', 'bccd_tfrecord')
                              for c in (1, 2)]
  assert all(v > 0 for v in measured.values())
  for line in lines:  # each core count measured in a process pinned to that many CPUs
    if line['bench'] == 'input_pipeline':
      assert (line['cores_by'], line['cpus_usable']) == ('affinity', line['cores']), line
  converted = [l for l in lines if l['bench'] == 'input_pipeline_convert']
  assert len(converted) == 2  # once in each pinned process
  assert all(c['images'] == 205 and c['shards'] == 2 for c in converted)
  ratios = [l for l in lines if l['bench'] == 'input_pipeline_ratio']
  over = {(l['dataset'], l['cores']): l['over_python'] for l in ratios if 'over_python' in l}
  assert sorted(over) == [(d, c) for d in ('bccd', 'bccd_tfrecord') for c in (1, 2)]
  for (name, cores), ratio in over.items():
    assert abs(ratio - measured[(name, cores)] / measured[('bccd_python', cores)]) < (
        0.05 * ratio + 0.01)
  scaling = {l['dataset']: l['two_over_one_core'] for l in ratios
             if 'two_over_one_core' in l}
  assert sorted(scaling) == ['bccd', 'bccd_python', 'bccd_tfrecord']
