"""Preprocessing on a tf.data service cluster (`train.py --data_service=grpc://HOST:PORT`).

The whole batched pipeline (`pipeline.make_dataset`: read, decode, flip, resize, pad,
batch) is serialized and sent to the service's workers; the trainer only receives
batches. A pipeline can only travel when its graph holds no Python callback: the
`tfrecord:` source qualifies, and so do folder sources whose images all decode in TF ops
(`graph_decode.py`; their workers must see the image files at the same paths); a folder
that needs Pillow's conversions does not: convert it first
(`python -m faster_rcnn_tf.data.convert`).

Sharding: `processing_mode` 'dynamic' (the default) hands the input files out to the
service's workers one at a time, so each image of an epoch is processed by one worker
(`tf.data.experimental.service.ShardingPolicy.DYNAMIC`); 'off' makes every worker process
the whole dataset (duplicates across workers, as many streams as workers). Several trainers
(multi_worker) share one job, `job_name`, and each batch goes to one of them.
"""

import tensorflow as tf

_PY_OPS = frozenset({'PyFunc', 'PyFuncStateless', 'EagerPyFunc', 'NumpyFunction'})
PROCESSING_MODES = {
    'dynamic': tf.data.experimental.service.ShardingPolicy.DYNAMIC,
    'off': tf.data.experimental.service.ShardingPolicy.OFF,
}


class DataServiceError(ValueError):
  """The dataset cannot be sent to a tf.data service (or the address is malformed)."""


def python_ops(dataset):
  """Names of the Python-callback op types in a dataset's graph (empty set: none).

  Args:
    dataset: a tf.data.Dataset.
  Returns:
    set of op type names among PyFunc, PyFuncStateless, EagerPyFunc, NumpyFunction.
  """
  serialized = dataset._as_serialized_graph()  # pylint: disable=protected-access
  graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops.update(node.op for node in function.node_def)
  return ops & _PY_OPS


def check_address(address):
  """Raises DataServiceError unless `address` is PROTOCOL://HOST:PORT."""
  protocol, sep, rest = address.partition('://')
  host, colon, port = rest.rpartition(':')
  if not sep or not protocol or not host or not colon or not port.isdigit():
    raise DataServiceError(f'--data_service={address!r}: expected grpc://HOST:PORT')


def distribute(dataset, address, job_name='faster_rcnn_train', processing_mode='dynamic'):
  """The dataset's elements produced by the tf.data service at `address`.

  Args:
    dataset: the batched training dataset (`pipeline.make_dataset`).
    address: the dispatcher, 'grpc://HOST:PORT'.
    job_name: shared by all trainers of one run, so they split one stream of batches.
    processing_mode: 'dynamic' or 'off' (see the module docstring).
  Returns:
    tf.data.Dataset with the same element spec.
  Raises:
    DataServiceError: bad address or mode, or a Python callback in the dataset's graph.
  """
  check_address(address)
  if processing_mode not in PROCESSING_MODES:
    raise DataServiceError(f'processing_mode {processing_mode!r}: expected one of '
                           f'{sorted(PROCESSING_MODES)}')
  found = python_ops(dataset)
  if found:
    raise DataServiceError(
        f'--data_service: this dataset decodes in Python ({", ".join(sorted(found))} ops), '
        'which a tf.data service cannot run; convert it to TFRecords first '
        '(python -m faster_rcnn_tf.data.convert) and train on tfrecord:GLOB')
  return dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=PROCESSING_MODES[processing_mode], service=address,
      job_name=job_name))
