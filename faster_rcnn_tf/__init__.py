"""Faster R-CNN in TensorFlow 2 / Keras 3.

    import faster_rcnn_tf
    model = faster_rcnn_tf.load_model('runs/shapes_quickstart')

`load_model` takes a training run folder, a .keras file or an export.py SavedModel
(see `faster_rcnn_tf.runs`). Importing the package loads no TensorFlow; `load_model` does.
"""


def load_model(path, checkpoint=None):
  """`runs.load_model`: a `runs.LoadedModel` for a run folder (its latest checkpoint, or
  `checkpoint`: 'best', 'ckpt-N', a folder or a prefix), a .keras file or a SavedModel."""
  from faster_rcnn_tf import runs
  return runs.load_model(path, checkpoint)
