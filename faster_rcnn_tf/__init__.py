"""Faster R-CNN in TensorFlow 2 / Keras 3.

    import faster_rcnn_tf
    model = faster_rcnn_tf.load_model('runs/shapes_quickstart')
    result = model.detect('photo.jpg')[0]   # boxes in the photo's pixels, class names
    picture = result.draw()                 # uint8 [H, W, 3] with the boxes drawn

`load_model` takes a training run folder, a .keras file or an export.py SavedModel
(see `faster_rcnn_tf.runs`). The package top is light: `import faster_rcnn_tf` loads no
TensorFlow; the names below import their module on first use.

  faster_rcnn_tf.load_model   a run folder, .keras file or SavedModel (`runs.load_model`)
  faster_rcnn_tf.FasterRCNN   the Keras model (`model.FasterRCNN`)
  faster_rcnn_tf.Execution    its execution options (`execution.Execution`)
  faster_rcnn_tf.Detector     detection on image files, arrays or a folder, in original
                              image pixels with class names (`detector.Detector`)
"""

import importlib

_LAZY = {
    'FasterRCNN': 'faster_rcnn_tf.model',
    'Execution': 'faster_rcnn_tf.execution',
    'Detector': 'faster_rcnn_tf.detector',
}

__all__ = sorted(list(_LAZY) + ['load_model'])


def load_model(path, checkpoint=None):
  """`runs.load_model`: a `runs.LoadedModel` for a run folder (its latest checkpoint, or
  `checkpoint`: 'best', 'ckpt-N', a folder or a prefix), a .keras file or a SavedModel."""
  from faster_rcnn_tf import runs
  return runs.load_model(path, checkpoint)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
