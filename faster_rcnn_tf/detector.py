"""Detection on pictures in a few lines: `Detector(model, class_names)(images)`.

    detector = faster_rcnn_tf.Detector(model, class_names, min_size=600, max_size=1000)
    results = detector('photos/')          # a folder, a file, an array, or a list of them
    for r in results:
      print(r.source, list(zip(r.class_names, r.scores.round(2))))
      PIL.Image.fromarray(r.draw()).save(...)

Boxes come back in the ORIGINAL image's pixels ([ymin, xmin, ymax, xmax], continuous
coordinates, see `ops.box_ops`), mapped from the model's resized-image pixels by
`box_scaling.rescale_boxes`.
"""

import dataclasses
import os
from typing import List

import numpy as np
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf import visualize
from faster_rcnn_tf import box_scaling
from faster_rcnn_tf.serving import preprocess
from faster_rcnn_tf.serving import results as results_lib

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass
class ImageDetections:
  """The detections of one image, sorted by score (high to low).

  source: the file path, or 'array[i]' for the i-th array given.
  image: uint8 [H, W, 3] RGB, the original pixels.
  boxes: float32 [N, 4] yxyx continuous pixels of `image`.
  scores: float32 [N]; classes: int32 [N] (1..K); class_names: N strings.
  """
  source: str
  image: np.ndarray
  boxes: np.ndarray
  scores: np.ndarray
  classes: np.ndarray
  class_names: List[str]

  def draw(self, min_score=0.5):
    """uint8 [H, W, 3]: the image with the detections scoring >= min_score drawn and
    labelled 'name score'."""
    keep = self.scores >= min_score
    labels = [f'{name} {score:.2f}' for name, score, k in
              zip(self.class_names, self.scores, keep) if k]
    return visualize.draw_boxes(self.image, self.boxes[keep], labels)


def _image_files(folder):
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise ValueError(f'folder {folder!r} has no {"/".join(IMAGE_EXTENSIONS)} image')
  return [os.path.join(folder, n) for n in names]


def _as_uint8_image(array, source):
  image = np.asarray(array)
  if image.ndim == 2:
    image = np.repeat(image[:, :, np.newaxis], 3, axis=2)
  if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
    raise ValueError(f'{source}: expected an RGB image [height, width, 3], got shape '
                     f'{image.shape}')
  if image.dtype != np.uint8:
    if not np.issubdtype(image.dtype, np.number) or image.min() < 0 or image.max() > 255:
      raise ValueError(f'{source}: pixel values must be 0..255 (dtype {image.dtype})')
    image = np.round(image).astype(np.uint8)
  return image


def load_images(images):
  """[(source, uint8 [H, W, 3])] of a file path, a folder (its JPEG / PNG files, by
  name), an array [H, W, 3] (or [H, W]; 0..255) or a list of those. Raises ValueError
  naming the file, folder or array that cannot be read."""
  items = images if isinstance(images, (list, tuple)) else [images]
  loaded = []
  arrays = 0
  for item in items:
    if isinstance(item, (str, os.PathLike)):
      path = os.fspath(item)
      if os.path.isdir(path):
        loaded.extend(load_images(_image_files(path)))
        continue
      if not os.path.isfile(path):
        raise ValueError(f'image file {path!r} does not exist')
      try:
        _, pixels = results_lib.read_image(path)
      except (OSError, ValueError) as e:
        raise ValueError(f'image file {path!r}: {e}') from None
      loaded.append((path, pixels))
    else:
      source = f'array[{arrays}]'
      arrays += 1
      loaded.append((source, _as_uint8_image(item, source)))
  return loaded


class Detector:
  """Runs a FasterRCNN on pictures and returns `ImageDetections` in original pixels.

  Args:
    model: a FasterRCNN with its weights (score threshold and max detections are the
      model's own settings).
    class_names: the K class names (class id i is class_names[i - 1]); None: 'class_i'.
    min_size, max_size: the resize of the model's training run (shorter side to
      min_size, longer side at most max_size; `data.transforms`).
    batch_size: images per model call.
    pad_multiple: padded batch height and width are multiples of this (the training
      pipeline's 32).
  """

  def __init__(self, model, class_names=None, min_size=600, max_size=1000, batch_size=4,
               pad_multiple=preprocess.DEFAULT_PAD_MULTIPLE):
    if class_names is None:
      class_names = [f'class_{i}' for i in range(1, model.num_classes + 1)]
    if len(class_names) != model.num_classes:
      raise ValueError(f'{len(class_names)} class names for a model with '
                       f'{model.num_classes} classes')
    if batch_size < 1:
      raise ValueError(f'batch_size must be at least 1, got {batch_size}')
    self.model = model
    self.class_names = [str(c) for c in class_names]
    self.min_size = int(min_size)
    self.max_size = int(max_size)
    self.batch_size = int(batch_size)
    self.pad_multiple = int(pad_multiple)
    self._detect = tf.function(model.detect, reduce_retracing=True)

  def __call__(self, images) -> List[ImageDetections]:
    """images: a file path, a folder, an array or a list of them (see `load_images`)."""
    loaded = load_images(images)
    found = []
    for start in range(0, len(loaded), self.batch_size):
      found.extend(self._detect_batch(loaded[start:start + self.batch_size]))
    return found

  def _detect_batch(self, loaded):
    resized = [preprocess.resize_image(tf.constant(image), self.min_size, self.max_size)
               for _, image in loaded]
    sizes = tf.stack([size for _, size in resized])
    height, width = (int(v) for v in tf.reduce_max(sizes, axis=0))
    batch = tf.stack([tf.pad(pixels, [[0, height - int(size[0])],
                                      [0, width - int(size[1])], [0, 0]])
                      for pixels, size in resized])
    batch = preprocess.pad_to_multiple(batch, self.pad_multiple)
    out = self._detect(batch, sizes)
    originals = np.array([image.shape[:2] for _, image in loaded], np.int32)
    boxes = box_scaling.rescale_boxes(out[inputs.DETECTION_BOXES], sizes, originals).numpy()
    results = []
    for i, (source, image) in enumerate(loaded):
      n = int(out[inputs.NUM_DETECTIONS][i])
      classes = out[inputs.DETECTION_CLASSES][i, :n].numpy()
      results.append(ImageDetections(
          source=source, image=image, boxes=boxes[i, :n],
          scores=out[inputs.DETECTION_SCORES][i, :n].numpy(), classes=classes,
          class_names=[self.class_names[c - 1] for c in classes]))
    return results


def detect(model, images, class_names=None, **kwargs) -> List[ImageDetections]:
  """`Detector(model, class_names, **kwargs)(images)` in one call."""
  return Detector(model, class_names, **kwargs)(images)

