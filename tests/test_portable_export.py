"""export.py --format=tflite / onnx and predict.py --tflite / --onnx: builtin-only TFLite
operators, detections equal to the SavedModel's at the same input size (LiteRT and ONNX
Runtime running the files), letterbox geometry, the zero-area-safe NMS, bad input."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import nms
from faster_rcnn_tf import runs
from faster_rcnn_tf.serving import exporter
from faster_rcnn_tf.serving import onnx_export
from faster_rcnn_tf.serving import portable
from faster_rcnn_tf.serving import portable_clients
from faster_rcnn_tf.serving import portable_export
from faster_rcnn_tf.serving import tflite_export
from tests import run_helpers
from tests import test_export_support as support

SIZE = 64           # the tiny run's images are 64 pixels
THRESHOLD = '0.05'  # the run's flags.cfg has 0.0: every near-zero score would be a row
TOL = 1e-3
NUMERIC = portable.OUTPUT_NAMES


def builtin_only(ops):
  """Asserts a TFLite operator list has no custom (Flex or other) operator."""
  assert ops, 'no operators read'
  custom = [op for op in ops if op[1] is not None or op[0] in ('CUSTOM', 'DELEGATE')]
  assert not custom, f'non-builtin operators: {custom}'


def assert_same_detections(got, want, label):
  """The same detections to TOL, counts exactly: scores row by row (both are sorted), and
  each row's box and class equal to those of a row of the other whose score is within TOL
  of it. Rows whose scores are that close may come in either order: boxes in the zero
  border of a letterboxed image see the same features and score alike up to float
  rounding, which differs between runtimes."""
  np.testing.assert_array_equal(np.asarray(got['num_detections']).reshape(-1),
                                np.asarray(want['num_detections']).reshape(-1), label)
  n = int(np.asarray(want['num_detections']).reshape(-1)[0])
  assert n > 0, f'{label}: no detections to compare'
  np.testing.assert_allclose(np.asarray(got['detection_scores']),
                             np.asarray(want['detection_scores']), rtol=0, atol=TOL,
                             err_msg=f'{label}: detection_scores')
  scores = [np.asarray(d['detection_scores'])[0, :n] for d in (got, want)]
  boxes = [np.asarray(d['detection_boxes'])[0, :n] for d in (got, want)]
  classes = [np.asarray(d['detection_classes'])[0, :n] for d in (got, want)]
  unmatched = list(range(n))
  for i in range(n):
    match = next((j for j in unmatched if abs(scores[0][i] - scores[1][j]) <= TOL and
                  classes[0][i] == classes[1][j] and
                  np.abs(boxes[0][i] - boxes[1][j]).max() <= TOL), None)
    assert match is not None, (f'{label}: row {i} (class {classes[0][i]}, score '
                               f'{scores[0][i]}, box {boxes[0][i]}) is not among the '
                               f'expected rows {unmatched} of scores within {TOL}')
    unmatched.remove(match)
  for d in (got, want):  # padding rows
    assert not np.asarray(d['detection_boxes'])[0, n:].any(), label
    assert not np.asarray(d['detection_classes'])[0, n:].any(), label


def numpy_outputs(outputs):
  return {k: (v.numpy() if hasattr(v, 'numpy') else np.asarray(v)) for k, v in outputs.items()}


@pytest.fixture(scope='module')
def tiny_model_dir(tmp_path_factory):
  """The tiny test run trained for 800 steps instead of 6: a model that barely trained
  gives many detections with scores equal to 1e-6, whose order (and which of two equal
  boxes NMS keeps) is a coin toss in any two implementations."""
  model_dir = str(tmp_path_factory.mktemp('tiny_800') / 'model')
  run_helpers.train_tiny(model_dir, '--num_steps=800', '--checkpoint_every=800',
                         '--learning_rate=0.01', '--lr_decay_steps=600',
                         '--shapes_train_images=512', '--log_every=200', '--nofinal_eval')
  return model_dir


def threshold_config(model_dir):
  """The run's RunConfig with score threshold THRESHOLD."""
  config = runs.read_run_config(model_dir)
  return config.replace(model=dataclasses.replace(config.model,
                                                  score_threshold=float(THRESHOLD)))


@pytest.fixture(scope='module')
def run(tiny_model_dir):
  """(model, class names) of the tiny run, score threshold THRESHOLD."""
  loaded = runs.load_model(tiny_model_dir, config=threshold_config(tiny_model_dir))
  return loaded.model, list(loaded.class_names)


@pytest.fixture(scope='module')
def reference(run, tmp_path_factory):
  """The SavedModel of the model as TensorFlow runs it (CropAndResize, TF's NMS kernel)
  on the same letterbox canvas: its 'detect_images' signature, loaded back."""
  model, names = run
  detector = portable.LetterboxDetector(model, names, (SIZE, SIZE), portable=False)
  path = str(tmp_path_factory.mktemp('letterbox_saved_model'))
  tf.saved_model.save(detector, path,
                      signatures={'detect_images': detector.detect.get_concrete_function()})
  loaded = tf.saved_model.load(path)
  fn = loaded.signatures['detect_images']
  return lambda pixels: numpy_outputs(fn(images=tf.constant(pixels)))


@pytest.fixture(scope='module')
def images():
  """Two images of different sizes and shapes (tall, wide): letterboxed differently."""
  return {'tall': support.shapes_image(56, 34, seed=11)[np.newaxis],
          'wide': support.shapes_image(30, 90, seed=12)[np.newaxis]}


@pytest.fixture(scope='module')
def exports(tiny_model_dir, tmp_path_factory):
  """export.py --format=tflite and --format=onnx of the tiny run (as a user runs them)."""
  out = str(tmp_path_factory.mktemp('portable_exports'))
  paths = {}
  for fmt, name in (('tflite', f'faster_rcnn_{SIZE}x{SIZE}_none.tflite'),
                    ('onnx', f'faster_rcnn_{SIZE}x{SIZE}.onnx')):
    result = run_helpers.run_script(
        'export.py', f'--model_dir={tiny_model_dir}', f'--export_dir={out}',
        f'--format={fmt}', f'--tflite_size={SIZE}', f'--score_threshold={THRESHOLD}')
    assert result.returncode == 0, result.stdout + result.stderr
    paths[fmt] = os.path.join(out, name)
    assert paths[fmt] in result.stdout
  return out, paths


# ---- letterbox geometry and the zero-area-safe NMS (independent references) ----

def test_parse_size():
  assert portable.parse_size('320') == (320, 320)
  assert portable.parse_size('480x640') == (480, 640)
  for bad in ('abc', '0', '320x', '-5', '16'):
    with pytest.raises(ValueError, match='--tflite_size'):
      portable.parse_size(bad)


def test_letterbox_matches_hand_computed_geometry():
  image = support.shapes_image(30, 70, seed=3)
  pixels, sizes = portable.letterbox(tf.constant(image[np.newaxis]), (64, 64))
  # 64 / 70 is the smaller scale: 30 * 64 / 70 = 27.4 -> 27 rows, 64 columns.
  np.testing.assert_array_equal(sizes.numpy(), [[27, 64]])
  assert pixels.shape == (1, 64, 64, 3)
  want = tf.image.resize(image.astype(np.float32), (27, 64), method='bilinear').numpy()
  np.testing.assert_allclose(pixels.numpy()[0, :27], want, atol=1e-4)
  assert not pixels.numpy()[0, 27:].any()
  # A canvas that is not a multiple of 32 is rounded up; the image fits in the size.
  pixels, sizes = portable.letterbox(tf.constant(image[np.newaxis]), (50, 100))
  assert pixels.shape == (1, 64, 128, 3)
  # scale min(50 / 30, 100 / 70) = 1.43: 30 x 70 -> 42.9 x 100 -> 43 x 100.
  np.testing.assert_array_equal(sizes.numpy(), [[43, 100]])


def test_forced_gather_crop_pooling_has_no_crop_and_resize():
  from faster_rcnn_tf.ops import roi_pooling
  rng = np.random.default_rng(2)
  features = tf.constant(rng.normal(size=(1, 6, 8, 4)), tf.float32)
  rois = tf.constant([[[3.0, 5.0, 60.0, 100.0], [0.0, 0.0, 90.0, 120.0]]], tf.float32)

  def op_types(forced):
    fn = tf.function(lambda f, r: roi_pooling.crop_pool(f, r, 16, 3, max_pool=False))
    if forced:
      with roi_pooling.forced_impl('gather'):
        graph = fn.get_concrete_function(features, rois).graph
    else:
      graph = fn.get_concrete_function(features, rois).graph
    return {op.type for op in graph.get_operations()}, fn(features, rois)

  plain_ops, plain = op_types(False)
  gather_ops, gathered = op_types(True)
  assert 'CropAndResize' in plain_ops and 'CropAndResize' not in gather_ops
  np.testing.assert_allclose(gathered.numpy(), plain.numpy(), atol=1e-5)


def greedy_nms(boxes, scores, max_output, iou_threshold):
  """Plain numpy greedy NMS; a zero-area box has IoU 0 with everything (TF's rule)."""
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  kept = []
  for i in np.argsort(-scores, kind='stable'):
    overlaps = False
    for j in kept:
      ih = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
      iw = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
      inter = max(ih, 0.0) * max(iw, 0.0)
      if area[i] > 0 and area[j] > 0 and inter / (area[i] + area[j] - inter) > iou_threshold:
        overlaps = True
        break
    if not overlaps:
      kept.append(i)
    if len(kept) == max_output:
      break
  return kept


def _nms_case(seed, n, descending=False):
  """Boxes [n, 4] (a quarter of zero area) and scores [n]: a random order, or descending
  (box 0 the best, as the detection head's score-sorted sets)."""
  rng = np.random.default_rng(seed)
  corners = rng.uniform(0, 50, (n, 4))
  boxes = np.stack([np.minimum(corners[:, 0], corners[:, 2]),
                    np.minimum(corners[:, 1], corners[:, 3]),
                    np.maximum(corners[:, 0], corners[:, 2]),
                    np.maximum(corners[:, 1], corners[:, 3])], 1).astype(np.float32)
  boxes[::4, 2] = boxes[::4, 0]  # a quarter are lines: zero area, as clipped proposals
  boxes[0] = [1, 1, 20, 20]  # box 0 has an area
  order = np.arange(n)[::-1] if descending else rng.permutation(n)
  return boxes, order.astype(np.float32) / n


def _nms_module(n, m):
  class Nms(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([n, 4], tf.float32, name='boxes'),
                                  tf.TensorSpec([n], tf.float32, name='scores')])
    def run(self, b, s):
      # Asked for 'tiled': the forced method wins, as in the portable exports.
      with nms.forced_method('kernel', split_zero_area=True):
        split, split_n = nms.non_max_suppression(b[None], s[None], m, 0.5, method='tiled')
      plain, plain_n = nms.non_max_suppression(b[None], s[None], m, 0.5, method='kernel')
      return {'split': split[0], 'split_n': split_n[0], 'plain': plain[0],
              'plain_n': plain_n[0]}
  return Nms()


@pytest.mark.parametrize('descending', [False, True])
def test_zero_area_split_nms_equals_greedy_in_tensorflow_and_tflite(descending):
  n, m = 60, 58
  boxes, scores = _nms_case(5, n, descending)
  module = _nms_module(n, m)
  want = greedy_nms(boxes, scores, m, 0.5)
  assert len(want) < m  # padding slots exist
  got = module.run(tf.constant(boxes), tf.constant(scores))
  assert got['split'].numpy()[:got['split_n']].tolist() == want
  assert got['plain'].numpy()[:got['plain_n']].tolist() == want  # TF's own kernel
  assert not got['split'].numpy()[len(want):].any()
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.run.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  data = converter.convert()
  builtin_only(tflite_export.operators(data))
  runner = portable_clients.tflite_interpreter(data).get_signature_runner()
  lite = runner(boxes=boxes, scores=scores)
  assert lite['split'][:lite['split_n']].tolist() == want
  # TFLite's kernel alone repeats a selected zero-area box: why the split form exists.
  assert lite['plain'][:lite['plain_n']].tolist() != want


def test_zero_area_split_nms_in_onnx_runtime_keeps_the_best_box():
  """ONNX's ScatterND keeps the last of duplicate writes (TF adds them): the split form
  once lost box 0, the best of a score-sorted set, to a padding slot's write of 0 (a
  trained MobileNetV2 lost a third of its mAP under ONNX Runtime)."""
  import onnxruntime
  import tf2onnx
  n, m = 60, 58
  boxes, scores = _nms_case(5, n, descending=True)
  module = _nms_module(n, m)
  proto, _ = tf2onnx.convert.from_function(
      module.run, input_signature=list(module.run.input_signature), opset=onnx_export.OPSET)
  session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                         providers=['CPUExecutionProvider'])
  names = [o.name for o in session.get_outputs()]
  out = dict(zip(names, session.run(None, {'boxes': boxes, 'scores': scores})))
  split = next(v for k, v in out.items() if k.startswith('split') and v.ndim == 1)
  count = int(next(v for k, v in out.items() if k.startswith('split_n')))
  want = greedy_nms(boxes, scores, m, 0.5)
  assert want[0] == 0 and split[:count].tolist() == want


# ---- TFLite ----

def test_tflite_export_is_builtin_only_with_metadata(exports, run):
  _, names = run
  out, paths = exports
  with open(paths['tflite'], 'rb') as f:
    data = f.read()
  ops = tflite_export.operators(data)
  builtin_only(ops)
  op_names = {name for name, _ in ops}
  assert 'NON_MAX_SUPPRESSION_V4' in op_names and 'GATHER' in op_names
  info = tflite_export.read_metadata(data)
  assert info['class_names'] == names and info['letterbox_size'] == [SIZE, SIZE]
  with open(os.path.splitext(paths['tflite'])[0] + '.json') as f:
    assert json.load(f) == info
  interpreter = portable_clients.tflite_interpreter(paths['tflite'])
  signatures = interpreter.get_signature_list()
  assert list(signatures) == ['detect_images']
  assert signatures['detect_images']['inputs'] == ['images']
  assert sorted(signatures['detect_images']['outputs']) == sorted(NUMERIC)


def test_tflite_detections_equal_saved_model(exports, reference, images):
  _, paths = exports
  interpreter = portable_clients.tflite_interpreter(paths['tflite'], num_threads=2)
  runner = interpreter.get_signature_runner('detect_images')
  for label, pixels in images.items():  # one interpreter, resized between the images
    assert_same_detections(runner(images=pixels), reference(pixels), f'tflite {label}')


def test_tflite_square_image_equals_the_export_py_saved_model(exports, tiny_model_dir,
                                                              tmp_path):
  """A SIZE x SIZE image is not letterboxed: the regular SavedModel export (resize to
  min_size = max_size = SIZE) sees the same input, through its serving_default."""
  _, paths = exports
  path, _ = exporter.export_saved_model(tiny_model_dir, str(tmp_path / 'base'),
                                        config=threshold_config(tiny_model_dir))
  image = support.shapes_image(SIZE, SIZE, seed=13)
  png = support.encode(image, 'PNG')
  loaded = tf.saved_model.load(path)
  want = numpy_outputs(loaded.signatures['serving_default'](image_bytes=tf.constant([png])))
  got = portable_clients.TFLiteClient(paths['tflite']).detect([png])
  assert_same_detections(got, want, 'square')
  assert list(got['detection_class_names'][0]) == [
      s.decode() for s in want['detection_class_names'][0]]


def test_tflite_quantized_variants(run, images):
  model, names = run
  detector = portable.LetterboxDetector(model, names, (SIZE, SIZE))
  sizes = {}
  for quantization in tflite_export.QUANTIZATIONS:
    info = portable_export.export_info(detector, 'tflite', quantization, None)
    data = portable_export.convert_detector(detector, 'tflite', info, quantization)
    builtin_only(tflite_export.operators(data))
    sizes[quantization] = len(data)
    runner = portable_clients.tflite_interpreter(data).get_signature_runner(
        'detect_images')
    out = runner(images=images['tall'])
    n = int(out['num_detections'][0])
    assert 0 < n <= model.detection_generator.max_detections
    boxes = out['detection_boxes'][0, :n]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert set(out['detection_classes'][0, :n]) <= set(range(1, len(names) + 1))
  # The weights dominate the file: float16 halves it, int8 quarters it.
  assert sizes['float16'] < 0.6 * sizes['none']
  assert sizes['dynamic'] < 0.35 * sizes['none']


def test_mobilenet_v2_tflite_builtin_only_and_tflite_onnx_equal(tmp_path):
  """MobileNetV2 trained for 3 steps (batch norm statistics moved off their initial
  values, without which a random MobileNetV2's features vanish), its class and RPN
  logits scaled so that scores are apart: an untrained model's near-equal scores make
  the order of detections a coin toss."""
  model_dir = str(tmp_path / 'mobilenet_run')
  result = run_helpers.run_script(
      'train.py', f'--flagfile={os.path.join(run_helpers.ROOT, "configs", "shapes_mobilenet_v2.cfg")}',
      f'--model_dir={model_dir}', '--num_steps=3', '--checkpoint_every=3', '--warmup_steps=1',
      '--lr_decay_steps=10', '--shapes_train_images=16', '--shapes_test_images=4',
      '--nofinal_eval', '--log_every=1')
  assert result.returncode == 0, result.stdout + result.stderr
  loaded = runs.load_model(model_dir)
  model, names = loaded.model, list(loaded.class_names)
  for layer in (model.cls_score, model.rpn_head.cls):
    layer.kernel.assign(layer.kernel * 5.0)
  model.cls_score.bias.assign([0.0, 2.0, 2.5, 3.0])
  size = 128
  detector = portable.LetterboxDetector(model, names, (size, size))
  data = portable_export.convert_detector(detector, 'tflite', {'class_names': names})
  ops = tflite_export.operators(data)
  builtin_only(ops)
  assert 'DEPTHWISE_CONV_2D' in {name for name, _ in ops}
  runner = portable_clients.tflite_interpreter(data).get_signature_runner('detect_images')
  saved = portable.LetterboxDetector(model, names, (size, size), portable=False)
  tf.saved_model.save(saved, str(tmp_path / 'saved'), signatures={
      'detect_images': saved.detect.get_concrete_function()})
  fn = tf.saved_model.load(str(tmp_path / 'saved')).signatures['detect_images']
  onnx_path = tmp_path / 'mobilenet.onnx'
  onnx_path.write_bytes(portable_export.convert_detector(detector, 'onnx',
                                                         {'class_names': names}))
  onnx_client = portable_clients.OnnxClient(str(onnx_path))
  for label, pixels in (('tall', support.shapes_image(150, 90, seed=21)),
                        ('wide', support.shapes_image(80, 140, seed=22))):
    want = numpy_outputs(fn(images=tf.constant(pixels[np.newaxis])))
    assert_same_detections(runner(images=pixels[np.newaxis]), want, f'tflite {label}')
    assert_same_detections(onnx_client.run(pixels[np.newaxis]), want, f'onnx {label}')


# ---- ONNX ----

def test_onnx_detections_equal_saved_model(exports, reference, images, run):
  _, paths = exports
  with open(paths['onnx'], 'rb') as f:
    data = f.read()
  ops = onnx_export.op_types(data)
  assert 'NonMaxSuppression' in ops and 'Loop' in ops
  assert onnx_export.read_metadata(data)['class_names'] == run[1]
  onnx_client = portable_clients.OnnxClient(paths['onnx'], num_threads=2)
  for label, pixels in images.items():
    assert_same_detections(onnx_client.run(pixels), reference(pixels), f'onnx {label}')


def test_onnx_export_names_an_op_it_cannot_convert():
  """tf2onnx has no ONNX form of Svd: the export refuses, naming it."""

  class WithSvd(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8,
                                                name='images')])
    def detect(self, images):
      pixels = tf.cast(images[0, :4, :4, 0], tf.float32)
      return {'singular_values': tf.linalg.svd(pixels, compute_uv=False)}

  with pytest.raises(onnx_export.ConversionError, match=r'cannot convert: Svd$'):
    onnx_export.convert(WithSvd(), {})


# ---- predict.py ----

def test_predict_tflite_and_onnx(exports, reference, images, tmp_path):
  _, paths = exports
  folder = tmp_path / 'in'
  folder.mkdir()
  for label, pixels in images.items():
    (folder / f'{label}.png').write_bytes(support.encode(pixels[0], 'PNG'))
  (folder / 'broken.png').write_bytes(b'not an image')
  for fmt in ('tflite', 'onnx'):
    out = tmp_path / f'out_{fmt}'
    result = run_helpers.run_script('predict.py', f'--{fmt}={paths[fmt]}',
                                    f'--output_dir={out}', '--min_score=0.0', str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / 'detections.json') as f:
      records = {os.path.basename(r['file']): r for r in json.load(f)['images']}
    assert records['broken.png']['error'] and records['broken.png']['num_detections'] == 0
    for label, pixels in images.items():
      record, want = records[f'{label}.png'], reference(pixels)
      n = int(want['num_detections'][0])
      assert record['num_detections'] == n
      np.testing.assert_allclose(record['boxes_normalized'], want['detection_boxes'][0, :n],
                                 atol=TOL)
      h, w = pixels.shape[1:3]
      np.testing.assert_allclose(record['boxes'],
                                 want['detection_boxes'][0, :n] * [h, w, h, w], atol=0.01)
      assert os.path.isfile(record['annotated'])


# ---- bad input ----

def one_error_line(result, prog, *words):
  assert result.returncode == 2, result.stdout + result.stderr
  lines = [line for line in result.stderr.strip().splitlines()
           if line.startswith(f'{prog}: error:')]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr
  for word in words:
    assert word in lines[0], lines[0]


def test_export_refuses_bad_size_and_existing_file(exports, tiny_model_dir):
  out, paths = exports
  one_error_line(run_helpers.run_script(
      'export.py', f'--model_dir={tiny_model_dir}', f'--export_dir={out}',
      '--format=tflite', '--tflite_size=big'), 'export.py', '--tflite_size=big')
  before = os.path.getmtime(paths['tflite'])
  one_error_line(run_helpers.run_script(
      'export.py', f'--model_dir={tiny_model_dir}', f'--export_dir={out}',
      '--format=tflite', f'--tflite_size={SIZE}'), 'export.py', 'already exists')
  assert os.path.getmtime(paths['tflite']) == before


def test_predict_refuses_missing_and_foreign_models(tmp_path):
  image = tmp_path / 'a.png'
  image.write_bytes(support.encode(support.shapes_image(20, 20, seed=1), 'PNG'))
  one_error_line(run_helpers.run_script('predict.py', f'--tflite={tmp_path}/none.tflite',
                                        f'--output_dir={tmp_path}', str(image)),
                 'predict.py', 'none.tflite', 'no such file')
  junk = tmp_path / 'junk.onnx'
  junk.write_bytes(b'\x00' * 64)
  one_error_line(run_helpers.run_script('predict.py', f'--onnx={junk}',
                                        f'--output_dir={tmp_path}', str(image)),
                 'predict.py', 'junk.onnx')


# ---- bench/bench_deploy.py ----

def test_bench_deploy_smoke(tiny_model_dir):
  result = run_helpers.run_script(
      'bench/bench_deploy.py', f'--model_dir={tiny_model_dir}', f'--sizes={SIZE}',
      '--runtimes=saved_model,tflite_none,tflite_dynamic,onnx', '--eval_images=6',
      '--repeats=1', '--warmup=1', f'--score_threshold={THRESHOLD}')
  assert result.returncode == 0, result.stdout + result.stderr
  records = {r['runtime']: r for r in map(json.loads, result.stdout.splitlines())}
  assert sorted(records) == ['onnx', 'saved_model', 'tflite_dynamic', 'tflite_none']
  for record in records.values():
    assert record['size'] == f'{SIZE}x{SIZE}' and record['eval_images'] == 6
    assert record['sec_per_image_min'] <= record['sec_per_image_median']
    assert 0.0 <= record['map_voc07'] <= 1.0
  # Equal detections (the tests above) give equal mAPs.
  assert records['tflite_none']['map_voc07'] == records['saved_model']['map_voc07']
  assert records['onnx']['map_voc07'] == records['saved_model']['map_voc07']
  assert records['tflite_none']['map_change_vs_tflite_none'] == 0.0
  assert records['tflite_dynamic']['file_mb'] < records['tflite_none']['file_mb']


def test_bench_deploy_refuses_an_unknown_runtime(tiny_model_dir):
  result = run_helpers.run_script('bench/bench_deploy.py', f'--model_dir={tiny_model_dir}',
                                  '--runtimes=saved_model,tflite_int4')
  one_error_line(result, 'bench_deploy.py', '--runtimes', 'tflite_int4')
