"""export.py and the exported SavedModel: signatures, equality with the in-process model in a
fresh process, no Python ops, bad input, versions, reproducibility, all-or-nothing writes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.data import transforms
from faster_rcnn_tf.serving import export_module as em
from faster_rcnn_tf.serving import exporter
from faster_rcnn_tf.serving import preprocess
from tests import run_helpers
from tests import test_export_support as support

OUTPUT_SPECS = {  # name: (saved_model_cli dtype, shape with M = 100)
    'detection_boxes': ('DT_FLOAT', '(-1, 100, 4)'),
    'detection_scores': ('DT_FLOAT', '(-1, 100)'),
    'detection_classes': ('DT_INT32', '(-1, 100)'),
    'detection_class_names': ('DT_STRING', '(-1, 100)'),
    'num_detections': ('DT_INT32', '(-1)'),
}
PYTHON_OPS = {'PyFunc', 'PyFuncStateless', 'EagerPyFunc', 'NumpyFunction'}

# Runs in a fresh interpreter, outside the repository and without PYTHONPATH.
CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    saved_model, request_path, out_path = sys.argv[1:]
    with open(request_path) as f:
      request = json.load(f)
    encoded = [open(p, 'rb').read() for p in request['files']]
    arrays = np.load(request['arrays'])
    loaded = tf.saved_model.load(saved_model)
    results = {}
    for key, fn, kwargs in [
        ('bytes', 'serving_default', {'image_bytes': tf.constant(encoded)}),
        ('same', 'detect_images', {'images': tf.constant(arrays['same'])}),
        ('other', 'detect_images', {'images': tf.constant(arrays['other'])})]:
      for name, value in loaded.signatures[fn](**kwargs).items():
        value = value.numpy()
        results[f'{key}/{name}'] = value.astype('S') if value.dtype == object else value
    assert 'faster_rcnn_tf' not in sys.modules, 'the export needs the project code'
    np.savez(out_path, **results)
    print('child ok')
''')


@pytest.fixture(scope='module')
def base(tiny_model_dir, tmp_path_factory):
  return support.exported_base(tiny_model_dir, tmp_path_factory.getbasetemp())


@pytest.fixture(scope='module')
def reference(tiny_model_dir):
  """(DetectionModule restored in this process, class names)."""
  return support.reference_module(tiny_model_dir)


@pytest.fixture(scope='module')
def images():
  """Two encoded images of different sizes and uint8 batches for detect_images."""
  a = support.shapes_image(60, 90, seed=1)
  b = support.shapes_image(100, 50, seed=2)
  return {'arrays': [a, b],
          'encoded': [support.encode(a, 'PNG'), support.encode(b, 'JPEG', quality=95)],
          'same': np.stack([support.shapes_image(70, 70, seed=3),
                            support.shapes_image(70, 70, seed=4)]),
          'other': b[np.newaxis]}


@pytest.fixture(scope='module')
def processes(base, images, tiny_model_dir, tmp_path_factory):
  """Runs the fresh-process check, saved_model_cli and two bad export.py calls at once."""
  work = tmp_path_factory.mktemp('processes')
  files = []
  for i, data in enumerate(images['encoded']):
    files.append(str(work / f'image{i}'))
    with open(files[-1], 'wb') as f:
      f.write(data)
  np.savez(work / 'arrays.npz', same=images['same'], other=images['other'])
  (work / 'request.json').write_text(json.dumps({'files': files,
                                                 'arrays': str(work / 'arrays.npz')}))
  (work / 'child.py').write_text(CHILD)
  clean_env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  clean_env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  version = os.path.join(base, '1')
  bad_base = str(work / 'bad_exports')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  export = [sys.executable, os.path.join(run_helpers.ROOT, 'export.py')]
  commands = {
      'child': ([sys.executable, str(work / 'child.py'), version, str(work / 'request.json'),
                 str(work / 'out.npz')], str(work), clean_env),
      'cli': ([support.saved_model_cli(), 'show', '--dir', version, '--all'], str(work),
              clean_env),
      'bad_model_dir': (export + [f'--model_dir={work}/no_such_run',
                                  f'--export_dir={bad_base}'], run_helpers.ROOT, env),
  }
  running = {name: subprocess.Popen(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, (cmd, cwd, e) in commands.items()}
  done = {}
  for name, proc in running.items():
    out, err = proc.communicate(timeout=300)
    done[name] = (proc.returncode, out, err)
  return work, done


def _expected(module, class_names, batch):
  """FasterRCNN.detect in this process on a preprocessed batch -> the signature outputs."""
  det = {k: v.numpy() for k, v in
         module.model.detect(batch['images'], batch['image_sizes']).items()}
  sizes = np.asarray(batch['image_sizes'], np.float32)
  names = np.array([b''] + [c.encode() for c in class_names], dtype=object)
  return {
      'detection_boxes': det['detection_boxes'] / np.tile(sizes, 2)[:, None, :],
      'detection_scores': det['detection_scores'],
      'detection_classes': det['detection_classes'],
      'detection_class_names': names[det['detection_classes']],
      'num_detections': det['num_detections'],
  }


def _assert_same(actual, expected, atol=1e-4):
  assert set(actual) == set(em.OUTPUT_NAMES)
  np.testing.assert_array_equal(actual['num_detections'], expected['num_detections'])
  np.testing.assert_array_equal(actual['detection_classes'], expected['detection_classes'])
  np.testing.assert_allclose(actual['detection_boxes'], expected['detection_boxes'],
                             atol=atol, rtol=0)
  np.testing.assert_allclose(actual['detection_scores'], expected['detection_scores'],
                             atol=atol, rtol=0)
  assert [[bytes(v) for v in row] for row in actual['detection_class_names']] == \
         [[bytes(v) for v in row] for row in expected['detection_class_names']]


def _pipeline_batch(arrays, min_size, max_size):
  """The training pipeline's preprocessing of uint8 images (decoded), padded to 32."""
  resized = [transforms.resize_image_and_boxes(a, tf.zeros([0, 4]), min_size, max_size)
             for a in arrays]
  h = max(int(r[3][0]) for r in resized)
  w = max(int(r[3][1]) for r in resized)
  h, w = -(-h // 32) * 32, -(-w // 32) * 32
  images = np.zeros([len(arrays), h, w, 3], np.float32)
  for i, r in enumerate(resized):
    images[i, :r[0].shape[0], :r[0].shape[1]] = r[0].numpy()
  return images, np.array([r[3].numpy() for r in resized], np.int32)


def test_fresh_process_gets_the_in_process_detections(processes, reference, images):
  work, done = processes
  code, out, err = done['child']
  assert code == 0, out + err
  got = dict(np.load(work / 'out.npz', allow_pickle=False))
  module, class_names = reference
  fv_min, fv_max = module.min_size, module.max_size

  # serving_default: two images of different sizes, padded to one canvas in the graph.
  batch = module.preprocess_bytes(tf.constant(images['encoded']))
  np.testing.assert_array_equal(batch['index'], [0, 1])
  decoded = [tf.io.decode_image(e, channels=3).numpy() for e in images['encoded']]
  want_images, want_sizes = _pipeline_batch(decoded, fv_min, fv_max)
  np.testing.assert_array_equal(batch['image_sizes'], want_sizes)
  np.testing.assert_allclose(batch['images'], want_images, atol=1e-4)
  assert want_sizes.tolist() == [[43, 64], [64, 32]]   # really different sizes
  np.testing.assert_array_equal(batch['original_sizes'], [[60, 90], [100, 50]])
  expected = _expected(module, class_names, batch)
  assert expected['num_detections'].min() > 0
  _assert_same({k.split('/')[1]: v for k, v in got.items() if k.startswith('bytes/')},
               expected)

  # detect_images: a batch of two same-size images, and the second image alone.
  for key in ('same', 'other'):
    batch = module.preprocess_images(tf.constant(images[key]))
    want_images, want_sizes = _pipeline_batch(list(images[key]), fv_min, fv_max)
    np.testing.assert_allclose(batch['images'], want_images, atol=1e-4)
    np.testing.assert_array_equal(batch['image_sizes'], want_sizes)
    _assert_same({k.split('/')[1]: v for k, v in got.items() if k.startswith(key + '/')},
                 _expected(module, class_names, batch))


def test_saved_model_cli_lists_both_signatures(processes):
  _, done = processes
  code, out, err = done['cli']
  assert code == 0, out + err
  for signature, (input_name, dtype, shape) in {
      'serving_default': ('image_bytes', 'DT_STRING', '(-1)'),
      'detect_images': ('images', 'DT_UINT8', '(-1, -1, -1, 3)')}.items():
    start = out.index(f"signature_def['{signature}']:")
    end = out.find('signature_def[', start + 1)
    block = out[start:end if end > 0 else len(out)]
    inputs_part, outputs_part = block.split('output(s):')
    assert f"inputs['{input_name}'] tensor_info:\n        dtype: {dtype}\n" \
           f"        shape: {shape}\n" in inputs_part, block
    assert inputs_part.count("inputs['") == 1, block
    for name, (out_dtype, out_shape) in OUTPUT_SPECS.items():
      assert f"outputs['{name}'] tensor_info:\n        dtype: {out_dtype}\n" \
             f"        shape: {out_shape}\n" in outputs_part, (name, block)
    assert outputs_part.count("outputs['") == len(OUTPUT_SPECS)
    assert 'Method name is: tensorflow/serving/predict' in block


def _graph_ops(export_path):
  """(op type of every node of the SavedModel's graph and functions, function count)."""
  from tensorflow.core.protobuf import saved_model_pb2
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(export_path, 'saved_model.pb'), 'rb') as f:
    proto.ParseFromString(f.read())
  graph = proto.meta_graphs[0].graph_def
  ops = [node.op for node in graph.node]
  for function in graph.library.function:
    ops.extend(node.op for node in function.node_def)
  return ops, len(graph.library.function)


def test_graph_has_no_python_ops(base):
  ops, num_functions = _graph_ops(os.path.join(base, '1'))
  ops = set(ops)
  assert num_functions > 10
  assert {'Conv2D', 'DecodeJpeg', 'DecodePng', 'IgnoreErrorsDataset',
          'NonMaxSuppressionV4'} <= ops          # the whole pipeline is in the graph
  assert not ops & PYTHON_OPS
  info = json.loads(open(os.path.join(base, '1', exporter.INFO_FILE)).read())
  assert info['class_names'] == ['circle', 'square', 'triangle'] and info['version'] == 1


def test_bad_model_dir_fails_cleanly_writing_nothing(processes):
  work, done = processes
  code, out, err = done['bad_model_dir']
  assert code == 2, (out, err)
  assert err.strip().splitlines()[-1].startswith('export.py: error: '), err
  assert 'no_such_run: no such file or folder' in err, err
  assert 'Traceback' not in err
  assert not [n for n in os.listdir(work) if 'bad_exports' in n]   # no base, no temp


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope='module')
def loaded(base):
  return support.loaded_saved_model(os.path.join(base, '1'))


def _run(loaded, signature, **kwargs):
  return {k: v.numpy() for k, v in loaded.signatures[signature](**kwargs).items()}


def _row(outputs, i):
  return {k: v[i:i + 1] for k, v in outputs.items()}


def _assert_empty_row(outputs, i):
  assert outputs['num_detections'][i] == 0
  assert not outputs['detection_boxes'][i].any() and not outputs['detection_scores'][i].any()
  assert not outputs['detection_classes'][i].any()
  assert set(outputs['detection_class_names'][i].tolist()) == {b''}


def test_bad_encoded_images_get_zero_detections_and_spare_the_rest(loaded, images):
  good = images['encoded'][0]
  jpeg = images['encoded'][1]
  huge = support.flat_png(10000, 10000, (97, 97, 97))
  bomb = (b'\x89PNG\r\n\x1a\n' + b'\x00\x00\x00\rIHDR' +
          (200000).to_bytes(4, 'big') * 2 + b'\x08\x02\x00\x00\x00' + b'\x00' * 64)
  batch = [good, b'this is not an image', b'', support.encode(np.full((1, 1, 3), 200,
                                                                      np.uint8)),
           jpeg[:len(jpeg) // 3], bomb, huge, support.encode(np.full((100, 100, 3), 97,
                                                                     np.uint8)),
           b'\x89PNG\r\n\x1a\n', b'\xff\xd8\xff']
  out = _run(loaded, 'serving_default', image_bytes=tf.constant(batch))
  assert out['num_detections'].shape == (len(batch),)
  for i in (1, 2, 4, 5, 8, 9):     # garbage, empty, truncated, bomb, bare signatures
    _assert_empty_row(out, i)
  alone = _run(loaded, 'serving_default', image_bytes=tf.constant([good]))
  _assert_same(_row(out, 0), alone)
  assert out['num_detections'][0] > 0
  assert out['num_detections'][3] > 0                  # 1x1: resized, detected on
  _assert_same(_row(out, 6), _row(out, 7), atol=1e-6)  # 10000x10000 == 100x100 (flat grey)
  one = _run(loaded, 'detect_images', images=tf.fill([1, 1, 1, 3], tf.constant(200, tf.uint8)))
  _assert_same(_row(out, 3), one)                      # both signatures agree

  none_ok = _run(loaded, 'serving_default',
                 image_bytes=tf.constant([b'', b'junk'], tf.string))
  for i in range(2):
    _assert_empty_row(none_ok, i)
  empty = _run(loaded, 'serving_default', image_bytes=tf.constant([], tf.string))
  assert empty['detection_boxes'].shape == (0, 100, 4) and empty['num_detections'].shape == (0,)


def test_bad_uint8_batches_raise_invalid_argument_or_work(loaded):
  with pytest.raises(tf.errors.InvalidArgumentError, match='height and width must be at '
                                                           'least 1'):
    loaded.signatures['detect_images'](images=tf.zeros([1, 0, 5, 3], tf.uint8))
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    loaded.signatures['detect_images'](images=tf.zeros([1, 8, 8, 4], tf.uint8))
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    loaded.signatures['detect_images'](images=tf.zeros([1, 8, 8, 3], tf.float32))
  empty = _run(loaded, 'detect_images', images=tf.zeros([0, 8, 8, 3], tf.uint8))
  assert empty['detection_scores'].shape == (0, 100)
  big = _run(loaded, 'detect_images',
             images=tf.fill([1, 10000, 10000, 3], tf.constant(97, tf.uint8)))
  small = _run(loaded, 'detect_images',
               images=tf.fill([1, 100, 100, 3], tf.constant(97, tf.uint8)))
  _assert_same(big, small, atol=1e-6)
  # The process is still healthy after the errors.
  assert _run(loaded, 'detect_images', images=tf.zeros([1, 8, 8, 3], tf.uint8))[
      'num_detections'].shape == (1,)


def test_header_size_reads_png_and_jpeg_without_decoding(images):
  a, b = images['arrays']
  assert preprocess.header_size(images['encoded'][0]).numpy().tolist() == list(a.shape[:2])
  assert preprocess.header_size(images['encoded'][1]).numpy().tolist() == list(b.shape[:2])
  with pytest.raises(tf.errors.InvalidArgumentError, match='not a JPEG or PNG'):
    preprocess.header_size(tf.constant(b'GIF89a...'))
  with pytest.raises(tf.errors.InvalidArgumentError, match='empty image string'):
    preprocess.header_size(tf.constant(b''))
  with pytest.raises(tf.errors.InvalidArgumentError, match='more than 100 pixels'):
    preprocess.decode_image(tf.constant(images['encoded'][0]), max_pixels=100)


# ---------------------------------------------------------------- versions and writes

def test_second_export_is_next_version_and_identical(base, tiny_model_dir, loaded, images):
  """...also when it runs the detection head's NMS batched and each request batch as one
  (--detection_nms_method=batched --inference_splits=1, the GPU serving forms): same
  detections, the per-class NMS kernel gone from the graph (the proposal layer keeps its
  one), one copy of the model where the CPU form ('auto' here) holds three (two
  sub-batches and the whole batch, for batches of one image)."""
  config = support.run_config(tiny_model_dir, detection_nms_method='batched',
                              inference_splits='1')
  path, info = exporter.export_saved_model(tiny_model_dir, base, config=config)
  assert path == os.path.join(base, '2') and info['version'] == 2
  first_info = json.loads(open(os.path.join(base, '1', exporter.INFO_FILE)).read())
  assert ((first_info['detection_nms_method'], first_info['inference_splits']),
          (info['detection_nms_method'], info['inference_splits'])) == (('kernel', 2),
                                                                          ('batched', 1))
  ops = {v: _graph_ops(os.path.join(base, v))[0] for v in ('1', '2')}
  assert ops['2'].count('NonMaxSuppressionV4') < ops['1'].count('NonMaxSuppressionV4')
  crops = {v: ops[v].count('CropAndResize') for v in ops}  # one per model copy and function
  assert crops['2'] > 0 and crops['1'] == 3 * crops['2'], crops
  assert exporter.existing_versions(base) == [1, 2]
  again = tf.saved_model.load(path)
  request = tf.constant(images['encoded'])
  first = _run(loaded, 'serving_default', image_bytes=request)
  second = _run(again, 'serving_default', image_bytes=request)
  for name in em.OUTPUT_NAMES:
    np.testing.assert_array_equal(first[name], second[name])
  with pytest.raises(exporter.ExportError, match='already exists'):
    exporter.export_saved_model(tiny_model_dir, base, config=config, version=2)
  assert exporter.existing_versions(base) == [1, 2]
  assert [n for n in os.listdir(os.path.dirname(base)) if 'tmp-export' in n] == []


def test_version_numbers(tmp_path):
  base = tmp_path / 'base'
  assert exporter.next_version(str(base)) == 1
  for name in ('1', '3', 'tmp', '10x'):
    (base / name).mkdir(parents=True)
  (base / '7').write_text('a file, not a version')
  assert exporter.existing_versions(str(base)) == [1, 3]
  assert exporter.choose_version(str(base)) == 4
  assert exporter.choose_version(str(base), 2) == 2
  with pytest.raises(exporter.ExportError, match='already exists'):
    exporter.choose_version(str(base), 3)
  with pytest.raises(exporter.ExportError, match='positive'):
    exporter.choose_version(str(base), 0)


def test_failed_save_leaves_no_version_and_no_temp(tiny_model_dir, tmp_path, monkeypatch):
  base = str(tmp_path / 'exports')

  def crash(module, path, signatures=None, **kwargs):
    with open(os.path.join(path, 'saved_model.pb'), 'wb') as f:
      f.write(b'half')
    raise RuntimeError('disk full')

  monkeypatch.setattr(tf.saved_model, 'save', crash)
  monkeypatch.setattr(em.DetectionModule, 'signatures', lambda self: {})  # skip tracing
  with pytest.raises(RuntimeError, match='disk full'):
    exporter.export_saved_model(tiny_model_dir, base)
  assert exporter.existing_versions(base) == []
  assert os.listdir(tmp_path) in ([], ['exports'])
  assert not os.path.exists(base) or os.listdir(base) == []


def test_bad_checkpoints_are_refused_writing_nothing(tiny_model_dir, tmp_path):
  other = tf.train.Checkpoint(v=tf.Variable(1.0))
  prefix = other.save(str(tmp_path / 'other' / 'ckpt'))
  base = str(tmp_path / 'exports')
  with pytest.raises(exporter.ExportError, match='checkpoint=ckpt-999: not a checkpoint'):
    exporter.export_saved_model(tiny_model_dir, base, checkpoint='ckpt-999')
  with pytest.raises(exporter.ExportError, match='no checkpoint in folder'):
    exporter.export_saved_model(tiny_model_dir, base, checkpoint=str(tmp_path))
  with pytest.raises(exporter.ExportError, match='does not fit the model'):
    exporter.export_saved_model(tiny_model_dir, base, checkpoint=prefix)
  with pytest.raises(exporter.ExportError, match='not a training run folder'):
    exporter.export_saved_model(str(tmp_path / 'other'), base)
  assert sorted(os.listdir(tmp_path)) == ['other']
