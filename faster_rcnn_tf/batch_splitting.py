"""Running a batch as independent sub-batches that TensorFlow executes at the same time.

On a CPU, one image's ops leave cores idle: single-threaded kernels (NMS, top-k,
gathers), and the start and end of every multi-threaded op, where its threads wait for
the slowest. A batch whose images run as two independent chains of ops lets TensorFlow's
executor (inter-op parallelism) fill those gaps with the other chain's work
(`bench/bench_inference.py --inference_splits=1,2` measures it; figures in
docs/performance.md).
A GPU runs ops one after another on one stream, where a smaller batch per op only costs,
and an XLA-compiled function (TPUs too) is one program with no inter-op parallelism, so
'auto' splits on CPUs outside XLA only.

`map_sub_batches(fn, tensors, splits)` is `fn(*tensors)` computed sub-batch by
sub-batch (sizes differing by at most one image) and joined along axis 0. Every output
of `fn` must have the batch as its first axis, and `fn`'s result for an image must not
depend on the other images of its batch (true of `FasterRCNN.detect`: images are padded
to the batch's size before the model).
"""

import tensorflow as tf

from faster_rcnn_tf.ops import xla_context

AUTO = 'auto'
CPU_SPLITS = 2  # the sub-batches 'auto' runs on CPUs (8 singles measured slower on 2 cores)


def resolve_splits(splits, accelerator_visible=None):
  """'auto' or a positive int (or its string) -> the number of sub-batches.

  'auto' is 1 when TensorFlow sees a GPU or TPU (accelerator_visible: override for
  tests) or inside an XLA-compiled function, else `CPU_SPLITS`. Raises ValueError naming
  `inference_splits` for anything else.
  """
  if isinstance(splits, str) and splits.strip().lower() == AUTO:
    if accelerator_visible is None:
      accelerator_visible = bool(tf.config.list_logical_devices('GPU')
                                 or tf.config.list_logical_devices('TPU'))
    if accelerator_visible or xla_context.in_xla_compilation(if_unknown=False):
      return 1
    return CPU_SPLITS
  try:
    value = int(splits)
  except (TypeError, ValueError):
    value = None
  if value is None or isinstance(splits, bool) or value < 1 or value != float(splits):
    raise ValueError(f"inference_splits: expected 'auto' or a positive integer, "
                     f"got {splits!r}")
  return value


def sub_batch_sizes(batch, splits):
  """Sizes of min(splits, batch) sub-batches of `batch` images, larger ones first, each
  within one image of the others (python ints, or int32 scalars for a tensor batch when
  splits <= batch). Example: (8, 3) -> [3, 3, 2]."""
  if isinstance(batch, int):
    parts = min(splits, batch)
    return [batch // parts + (1 if i < batch % parts else 0) for i in range(parts)]
  return [(batch + splits - 1 - i) // splits for i in range(splits)]


def map_sub_batches(fn, tensors, splits):
  """fn(*tensors) computed as `splits` independent sub-batches, outputs concatenated.

  Args:
    fn: tensors with a leading batch axis -> a (nested) structure of tensors, each with
      the batch as its leading axis.
    tensors: sequence of tensors, all with the same leading batch size B.
    splits: int >= 1. B known when traced: min(splits, B) sub-batches (none for B = 1);
      B unknown: a `tf.cond` runs `splits` sub-batches when B >= splits, `fn` whole
      otherwise (both are traced).
  Returns:
    fn's structure, each tensor [B, ...].
  """
  tensors = [tf.convert_to_tensor(t) for t in tensors]
  static_batch = tensors[0].shape[0]
  if splits <= 1 or static_batch == 1 or static_batch == 0:
    return fn(*tensors)
  if static_batch is not None:
    return _split_and_join(fn, tensors, sub_batch_sizes(static_batch, splits))
  batch = tf.shape(tensors[0])[0]
  return tf.cond(batch >= splits,
                 lambda: _split_and_join(fn, tensors, sub_batch_sizes(batch, splits)),
                 lambda: fn(*tensors))


def _split_and_join(fn, tensors, sizes):
  size_splits = sizes if isinstance(sizes[0], int) else tf.stack(sizes)
  pieces = [tf.split(t, size_splits, num=len(sizes), axis=0) for t in tensors]
  outputs = [fn(*[piece[i] for piece in pieces]) for i in range(len(sizes))]
  return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *outputs)
