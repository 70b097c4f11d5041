"""Every shipped config parses with train.py's flags, and the reference recipes say what
DESIGN.md's reference solver says."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests import run_helpers

CONFIGS = sorted(glob.glob(os.path.join(run_helpers.ROOT, 'configs', '*.cfg')))


_PARSE_SCRIPT = """
import json, sys
from absl import flags
import train  # defines train.py's flags
out = {}
for path in sys.argv[1:]:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['train.py', f'--flagfile={path}'])
  out[path] = {name: flags.FLAGS[name].value for name in flags.FLAGS
               if flags.FLAGS[name].value is None
               or isinstance(flags.FLAGS[name].value, (str, int, float, bool, list))}
print(json.dumps(out))
"""


@pytest.fixture(scope='module')
def parsed():
  """{config path: {flag: value}} as train.py parses each config (one subprocess)."""
  env = dict(os.environ, PYTHONPATH=run_helpers.ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', _PARSE_SCRIPT, *CONFIGS], cwd=run_helpers.ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_configs_exist():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {'shapes_quickstart.cfg', 'vgg16_voc07.cfg', 'res101_voc07.cfg',
          'vgg16_voc0712.cfg', 'res101_coco.cfg', 'bccd_mobilenet.cfg'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_parses(parsed, path):
  values = parsed[path]
  assert values['model_dir'] and values['num_steps'] > 0 and values['batch_size'] > 0
  assert values['dataset']


@pytest.mark.parametrize('name,backbone', [('vgg16_voc07.cfg', 'vgg16'),
                                           ('res101_voc07.cfg', 'resnet101')])
def test_reference_recipe(parsed, name, backbone):
  v = parsed[os.path.join(run_helpers.ROOT, 'configs', name)]
  assert v['backbone'] == backbone and v['backbone_weights'] == 'imagenet'
  assert v['num_steps'] == 70000 and v['lr_decay_steps'] == ['50000']
  assert v['learning_rate'] == 0.001 and v['momentum'] == 0.9 and v['weight_decay'] == 1e-4
  assert v['optimizer'] == 'sgd' and v['double_bias_lr'] and v['flip']
  assert (v['min_size'], v['max_size']) == (600, 1000)
  assert v['dataset'] == 'tfds:voc/2007' and v['batch_size'] == 1
