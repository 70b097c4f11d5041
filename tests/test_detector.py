"""faster_rcnn_tf.Detector and box_scaling.rescale_boxes: detections in original-image
pixels from files, arrays and folders, against a by-hand resize and numpy mapping."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import faster_rcnn_tf
from faster_rcnn_tf import box_scaling
from faster_rcnn_tf import inputs

TINY = dict(backbone='tiny_s8', anchor_base_size=8, anchor_scales=(2, 4, 8), rpn_channels=16,
            train_pre_nms_topk=200, train_post_nms_topk=32, test_pre_nms_topk=200,
            test_post_nms_topk=32, roi_num_samples=32, max_detections=10,
            score_threshold=0.0, inference_splits=1)


@pytest.mark.parametrize('as_tensor', [False, True])
def test_rescale_boxes_by_hand(as_tensor):
  """The numpy path (evaluation, results files) and the TF path (serving graphs) give
  the hand-computed boxes, each in its own kind of array."""
  def rescale(boxes, *args, **kwargs):
    if as_tensor:
      out = box_scaling.rescale_boxes(tf.constant(boxes), *args, **kwargs)
      assert tf.is_tensor(out)
      return out.numpy()
    out = box_scaling.rescale_boxes(boxes, *args, **kwargs)
    assert isinstance(out, np.ndarray)
    return out

  boxes = np.array([[[10.0, 20.0, 30.0, 40.0], [-2.0, 0.0, 70.0, 90.0]]])
  # resized 64 x 80 -> original 32 x 160: y halves, x doubles; clipped to 32 x 160
  got = rescale(boxes, [[64, 80]], [[32, 160]])
  np.testing.assert_allclose(got, [[[5, 40, 15, 80], [0, 0, 32, 160]]])
  assert got.dtype == np.float64
  unclipped = rescale(boxes, [[64, 80]], [[32, 160]], clip=False)
  np.testing.assert_allclose(unclipped[0, 1], [-1, 0, 35, 180])
  normalized = rescale(boxes.astype(np.float32), [[64, 80]], [[1, 1]])
  np.testing.assert_array_equal(normalized[0, 0], np.float32([10, 20, 30, 40])
                                / np.float32([64, 80, 64, 80]))


@pytest.fixture(scope='module')
def model():
  keras.utils.set_random_seed(0)
  return faster_rcnn_tf.FasterRCNN(3, **TINY)


def _picture(seed, height, width):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _by_hand(model, image, min_size, max_size):
  """Resize (the pipeline's rule), pad to 32, detect, and map back in numpy."""
  h, w = image.shape[:2]
  scale = min(min_size / min(h, w), max_size / max(h, w))
  rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
  resized = tf.image.resize(image, [rh, rw], method='bilinear').numpy()
  ph, pw = -(-rh // 32) * 32, -(-rw // 32) * 32
  padded = np.zeros([1, ph, pw, 3], np.float32)
  padded[0, :rh, :rw] = resized
  out = model.detect(tf.constant(padded), tf.constant([[rh, rw]], tf.int32))
  n = int(out[inputs.NUM_DETECTIONS][0])
  boxes = out[inputs.DETECTION_BOXES][0, :n].numpy().astype(np.float64)
  boxes = boxes * np.array([h / rh, w / rw, h / rh, w / rw])
  boxes = np.clip(boxes, 0, [h, w, h, w])
  return boxes, out[inputs.DETECTION_SCORES][0, :n].numpy(), \
      out[inputs.DETECTION_CLASSES][0, :n].numpy()


def test_arrays_files_and_folders_give_original_pixel_boxes(model, tmp_path):
  names = ['circle', 'square', 'triangle']
  # One image a call: the by-hand reference pads each image alone (in a batch, the
  # padding to the largest image may reorder the untrained model's near-tied scores).
  detector = faster_rcnn_tf.Detector(model, names, min_size=64, max_size=96, batch_size=1)
  pictures = [_picture(1, 50, 120), _picture(2, 90, 70), _picture(3, 64, 64)]
  folder = tmp_path / 'photos'
  folder.mkdir()
  for i, picture in enumerate(pictures):
    Image.fromarray(picture).save(folder / f'{i}.png')
  (folder / 'notes.txt').write_text('not an image')
  from_arrays = detector(pictures)
  from_folder = detector(str(folder))
  from_file = detector(str(folder / '1.png'))
  assert [r.source for r in from_arrays] == ['array[0]', 'array[1]', 'array[2]']
  assert [os.path.basename(r.source) for r in from_folder] == ['0.png', '1.png', '2.png']
  assert from_file[0].source == str(folder / '1.png')
  for picture, a, f in zip(pictures, from_arrays, from_folder):
    want_boxes, want_scores, want_classes = _by_hand(model, picture, 64, 96)
    assert len(want_scores) > 0
    for result in (a, f):
      np.testing.assert_array_equal(result.image, picture)
      np.testing.assert_allclose(result.boxes, want_boxes, rtol=1e-5, atol=1e-3)
      np.testing.assert_allclose(result.scores, want_scores, rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(result.classes, want_classes)
      assert result.class_names == [names[c - 1] for c in want_classes]
  np.testing.assert_allclose(from_file[0].boxes, from_arrays[1].boxes, atol=1e-3)
  batched = faster_rcnn_tf.Detector(model, names, min_size=64, max_size=96, batch_size=2)(
      pictures)
  assert [r.source for r in batched] == [r.source for r in from_arrays]
  for result, picture in zip(batched, pictures):
    limits = np.array(picture.shape[:2] * 2)
    assert len(result.scores) and np.all((result.boxes >= 0) & (result.boxes <= limits))


def test_draw_marks_the_detections(model):
  picture = np.full((60, 80, 3), 128, np.uint8)
  (result,) = faster_rcnn_tf.Detector(model, min_size=64, max_size=96)(picture)
  assert result.class_names[0].startswith('class_')
  drawn = result.draw(min_score=0.0)
  assert drawn.shape == picture.shape and drawn.dtype == np.uint8
  assert np.any(drawn != picture)
  np.testing.assert_array_equal(result.draw(min_score=2.0), picture)  # nothing kept


@pytest.mark.parametrize('images,message', [
    ('no/such/file.jpg', "image file 'no/such/file.jpg' does not exist"),
    (np.zeros((4, 4)), None),
    (np.zeros((4, 4, 2)), r'array\[0\]: expected an RGB image'),
    (np.full((4, 4, 3), 300.0), r'array\[0\]: pixel values must be 0..255'),
])
def test_bad_inputs_name_the_culprit(model, images, message):
  detector = faster_rcnn_tf.Detector(model, min_size=64, max_size=96)
  if message is None:  # a grey [H, W] array is accepted
    assert detector(images)[0].image.shape == (4, 4, 3)
    return
  with pytest.raises(ValueError, match=message):
    detector(images)


def test_bad_files_and_folders_name_them(model, tmp_path):
  detector = faster_rcnn_tf.Detector(model, min_size=64, max_size=96)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='has no'):
    detector(str(tmp_path / 'empty'))
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'not a jpeg')
  with pytest.raises(ValueError, match='bad.jpg'):
    detector(str(bad))
  with pytest.raises(ValueError, match='2 class names'):
    faster_rcnn_tf.Detector(model, ['a', 'b'])


def test_package_top_is_lazy():
  import subprocess
  import sys
  code = ('import sys, faster_rcnn_tf; assert "tensorflow" not in sys.modules; '
          'assert "FasterRCNN" in dir(faster_rcnn_tf); print("ok")')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=root), timeout=120)
  assert out.stdout.strip() == 'ok', out.stderr
