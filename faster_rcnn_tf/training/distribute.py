"""Picking a tf.distribute strategy by name."""

import json
import os

import tensorflow as tf

STRATEGIES = ('default', 'mirrored', 'multi_worker', 'tpu')


def split_cpu(num_devices):
  """Splits the host CPU into `num_devices` logical devices (to run `mirrored` on a CPU).

  Must be called before TensorFlow initializes its devices.
  """
  if num_devices and num_devices > 1:
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


def make_strategy(name, tpu_address=''):
  """Returns the strategy for --strategy=name.

  default: the default (single-device) strategy; mirrored: every local GPU, or every
  logical CPU when there is no GPU; multi_worker: the hosts listed in TF_CONFIG;
  tpu: the TPU at `tpu_address` ('' for a local one).
  """
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    devices = [d.name for d in tf.config.list_logical_devices('GPU')]
    if not devices:
      devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices)
  if name == 'multi_worker':
    if 'TF_CONFIG' not in os.environ:
      raise ValueError('--strategy=multi_worker needs the TF_CONFIG environment variable '
                       '(cluster worker list and this task\'s index)')
    json.loads(os.environ['TF_CONFIG'])
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f'--strategy: unknown strategy {name!r}; choose one of '
                   f'{", ".join(STRATEGIES)}')


def is_chief():
  """True on the worker that writes checkpoints and summaries."""
  config = json.loads(os.environ.get('TF_CONFIG', '{}'))
  task = config.get('task', {})
  return task.get('type', 'worker') in ('chief',) or (
      task.get('type', 'worker') == 'worker' and task.get('index', 0) == 0
      and 'chief' not in config.get('cluster', {}))
