"""predict.py and the serving clients: local SavedModel, checkpoint, TF Serving REST (against a
local stand-in that checks TF Serving's documented JSON) and gRPC (PredictRequest)."""

import base64
import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faster_rcnn_tf import runs
from faster_rcnn_tf.serving import client
from faster_rcnn_tf.serving import export_module as em
from faster_rcnn_tf.serving import results
from tests import run_helpers
from tests import test_export_support as support

MODEL_NAME = 'tiny'


@pytest.fixture(scope='module')
def version_dir(tiny_model_dir, tmp_path_factory):
  base = support.exported_base(tiny_model_dir, tmp_path_factory.getbasetemp())
  return os.path.join(base, '1')


@pytest.fixture(scope='module')
def run_export(version_dir):
  """Runs serving_default of the export in this process: list of bytes -> numpy dict."""
  loaded = support.loaded_saved_model(version_dir)

  def run(encoded):
    out = loaded.signatures['serving_default'](image_bytes=tf.constant(encoded, tf.string))
    return {k: v.numpy() for k, v in out.items()}
  return run


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
  """a.png 60x90, b.jpg 100x50, bad.jpg (not an image), notes.txt (not picked up)."""
  folder = tmp_path_factory.mktemp('images')
  (folder / 'a.png').write_bytes(support.encode(support.shapes_image(60, 90, 1)))
  (folder / 'b.jpg').write_bytes(support.encode(support.shapes_image(100, 50, 2), 'JPEG'))
  (folder / 'bad.jpg').write_bytes(b'this is not a jpeg')
  (folder / 'notes.txt').write_text('not an image')
  return folder


def _assert_outputs_close(a, b, atol=1e-4):
  for name in em.OUTPUT_NAMES:
    if name == em.DETECTION_CLASS_NAMES:
      norm = lambda x: [[v.decode() if isinstance(v, bytes) else str(v) for v in row]
                        for row in x]
      assert norm(a[name]) == norm(b[name])
    elif a[name].dtype.kind == 'f':
      np.testing.assert_allclose(a[name], b[name], atol=atol, rtol=0)
    else:
      np.testing.assert_array_equal(a[name], b[name])


# ---------------------------------------------------------------- a TF Serving stand-in

class FakeServing:
  """A REST endpoint on 127.0.0.1 that accepts only TF Serving's documented predict JSON
  (row format: {"signature_name"?, "instances": [{"b64": ...}, ...]}) and answers as TF
  Serving does ({"predictions": [{output: value}, ...]}, or {"error": ...} with an HTTP
  error status), computing the answer with the SavedModel."""

  def __init__(self, run_export):
    self.requests = []
    owner = self

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        owner.requests.append((self.path, self.headers.get('Content-Type'), body))
        match = re.fullmatch(r'/v1/models/([^/:]+)(/versions/(\d+))?:predict', self.path)
        if not match or match.group(1) != MODEL_NAME:
          return self._answer(404, {'error': f'Servable not found for request: {self.path}'})
        try:
          request = json.loads(body)
          assert set(request) <= {'signature_name', 'instances'}, sorted(request)
          assert request.get('signature_name', 'serving_default') == 'serving_default'
          instances = request['instances']
          assert isinstance(instances, list) and instances
          assert all(isinstance(i, dict) and list(i) == ['b64'] for i in instances)
          encoded = [base64.b64decode(i['b64'], validate=True) for i in instances]
        except (ValueError, AssertionError, KeyError) as e:
          return self._answer(400, {'error': f'bad request: {e}'})
        out = run_export(encoded)
        predictions = [{name: (out[name][i].tolist() if name != em.DETECTION_CLASS_NAMES
                               else [v.decode() for v in out[name][i]])
                        for name in em.OUTPUT_NAMES} for i in range(len(encoded))]
        return self._answer(200, {'predictions': predictions})

    self.server = HTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


@pytest.fixture(scope='module')
def fake_serving(run_export):
  server = FakeServing(run_export)
  yield server
  server.close()


def test_rest_request_and_answer_follow_tf_serving_json(fake_serving, run_export, image_dir):
  encoded = [(image_dir / n).read_bytes() for n in ('a.png', 'b.jpg', 'bad.jpg')]
  rest = client.RestClient(fake_serving.url, MODEL_NAME, version=1)
  got = rest.detect(encoded)
  path, content_type, body = fake_serving.requests[-1]
  assert path == f'/v1/models/{MODEL_NAME}/versions/1:predict'
  assert content_type == 'application/json'
  request = json.loads(body)
  assert request == {'signature_name': 'serving_default',
                     'instances': [{'b64': base64.b64encode(e).decode()} for e in encoded]}
  want = run_export(encoded)
  _assert_outputs_close(got, want, atol=1e-6)
  assert got['num_detections'][2] == 0 and got['num_detections'][:2].min() > 0
  assert got[em.DETECTION_CLASS_NAMES].dtype == object

  url = client.RestClient(fake_serving.url.replace('http://', ''), MODEL_NAME).url
  assert url == f'{fake_serving.url}/v1/models/{MODEL_NAME}:predict'
  with pytest.raises(client.ServingError, match='HTTP 404: Servable not found'):
    client.RestClient(fake_serving.url, 'other').detect(encoded[:1])


def test_rest_answers_that_are_errors_or_malformed_raise_serving_error():
  with pytest.raises(client.ServingError, match='server error: boom'):
    client.parse_rest_response({'error': 'boom'}, 1)
  with pytest.raises(client.ServingError, match='2 predictions for 1 images'):
    client.parse_rest_response({'predictions': [{}, {}]}, 1)
  with pytest.raises(client.ServingError, match='lack "detection_boxes"'):
    client.parse_rest_response({'predictions': [{'detection_scores': [0.5]}]}, 1)
  with pytest.raises(client.ServingError, match='cannot reach the server'):
    with __import__('socket').socket() as s:   # a port nobody listens on
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    client.RestClient(f'http://127.0.0.1:{port}', MODEL_NAME, timeout=5).detect([b'x'])


def test_grpc_request_matches_the_export_signature(version_dir):
  from tensorflow.core.framework import types_pb2
  from tensorflow.core.protobuf import saved_model_pb2
  from tensorflow_serving.apis import predict_pb2
  images = [b'\xff\xd8\xff first', b'\x89PNG second']
  request = client.build_predict_request(MODEL_NAME, images, version=3)
  assert isinstance(request, predict_pb2.PredictRequest)
  assert request.model_spec.name == MODEL_NAME
  assert request.model_spec.signature_name == 'serving_default'
  assert request.model_spec.version.value == 3
  tensor = request.inputs['image_bytes']
  assert tensor.dtype == types_pb2.DT_STRING
  assert [d.size for d in tensor.tensor_shape.dim] == [2]
  assert list(tensor.string_val) == images
  assert tf.make_ndarray(tensor).tolist() == images
  assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == request

  proto = saved_model_pb2.SavedModel()
  proto.ParseFromString(open(os.path.join(version_dir, 'saved_model.pb'), 'rb').read())
  signature = proto.meta_graphs[0].signature_def[request.model_spec.signature_name]
  assert set(signature.inputs) == set(request.inputs)
  for name, info in signature.inputs.items():
    assert info.dtype == request.inputs[name].dtype
    assert len(info.tensor_shape.dim) == len(request.inputs[name].tensor_shape.dim)
  assert set(signature.outputs) == set(em.OUTPUT_NAMES)
  assert not client.build_predict_request(MODEL_NAME, images).model_spec.HasField('version')


def test_grpc_client_against_a_local_prediction_service(run_export, image_dir):
  import grpc
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc as service
  seen = []

  class Servicer(service.PredictionServiceServicer):
    def Predict(self, request, context):
      seen.append(request)
      if request.model_spec.name != MODEL_NAME:
        context.abort(grpc.StatusCode.NOT_FOUND, 'Servable not found')
      encoded = tf.make_ndarray(request.inputs['image_bytes']).tolist()
      response = predict_pb2.PredictResponse()
      for name, value in run_export(encoded).items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
      return response

  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
  service.add_PredictionServiceServicer_to_server(Servicer(), server)
  port = server.add_insecure_port('127.0.0.1:0')
  server.start()
  try:
    encoded = [(image_dir / n).read_bytes() for n in ('a.png', 'b.jpg')]
    grpc_client = client.GrpcClient(f'127.0.0.1:{port}', MODEL_NAME)
    _assert_outputs_close(grpc_client.detect(encoded), run_export(encoded), atol=0)
    assert seen[-1].inputs['image_bytes'].string_val == encoded
    with pytest.raises(client.ServingError, match='NOT_FOUND: Servable not found'):
      client.GrpcClient(f'127.0.0.1:{port}', 'other').detect(encoded)
    grpc_client.close()
  finally:
    server.stop(None)


def test_checkpoint_client_matches_the_export(tiny_model_dir, run_export, image_dir):
  module, _ = support.reference_module(tiny_model_dir)
  encoded = [(image_dir / n).read_bytes() for n in ('a.png', 'b.jpg', 'bad.jpg')]
  _assert_outputs_close(client.ModuleClient(module).detect(encoded), run_export(encoded))


def test_records_and_pictures(tmp_path):
  outputs = {
      em.DETECTION_BOXES: np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0, 0, 0, 0]]],
                                   np.float32),
      em.DETECTION_SCORES: np.array([[0.9, 0.3, 0]], np.float32),
      em.DETECTION_CLASSES: np.array([[2, 1, 0]], np.int32),
      em.DETECTION_CLASS_NAMES: np.array([['dog', 'cat', '']], object),
      em.NUM_DETECTIONS: np.array([2], np.int32),
  }
  record = results.image_record('x.jpg', 50, 100, outputs, 0)
  assert record['boxes'] == [[5.0, 20.0, 25.0, 60.0], [0.0, 0.0, 50.0, 100.0]]
  assert record['classes'] == [2, 1] and record['class_names'] == ['dog', 'cat']
  assert record['num_detections'] == 2 and record['error'] is None
  picture = results.annotate(np.zeros((50, 100, 3), np.uint8), record, min_score=0.5)
  assert picture.shape == (50, 100, 3) and picture.any()
  assert results.picture_names(['a/x.jpg', 'b/x.png', 'x', 'c/y.jpeg']) == \
         ['x.png', 'x_2.png', 'x_3.png', 'y.png']
  (tmp_path / 'gif.png').write_bytes(b'GIF89a' + b'\0' * 20)
  with pytest.raises(ValueError, match='not a JPEG or PNG'):
    results.read_image(str(tmp_path / 'gif.png'))


# ---------------------------------------------------------------- predict.py end to end

def _check_document(document, image_dir, want):
  records = document['images']
  assert [os.path.basename(r['file']) for r in records] == ['a.png', 'b.jpg', 'bad.jpg']
  assert records[2]['error'].startswith('not a JPEG or PNG') and records[2]['boxes'] == []
  for i, (record, size) in enumerate(zip(records[:2], ([60, 90], [100, 50]))):
    n = int(want['num_detections'][i])
    assert record['image_size'] == size and record['num_detections'] == n > 0
    normalized = np.array(record['boxes_normalized'])
    np.testing.assert_allclose(normalized, want['detection_boxes'][i, :n], atol=1e-5)
    np.testing.assert_allclose(np.array(record['boxes']), normalized * (size + size),
                               atol=2e-3)
    np.testing.assert_allclose(record['scores'], want['detection_scores'][i, :n], atol=1e-5)
    assert record['classes'] == want['detection_classes'][i, :n].tolist()
    assert record['class_names'] == [v.decode() for v in
                                     want['detection_class_names'][i, :n]]
    with Image.open(record['annotated']) as picture:
      assert picture.format == 'PNG' and picture.size == (size[1], size[0])


def test_predict_files_with_a_local_saved_model(version_dir, run_export, image_dir, tmp_path):
  files = [str(image_dir / n) for n in ('a.png', 'b.jpg', 'bad.jpg')]
  base = os.path.dirname(version_dir)      # BASE: its highest version is loaded
  loaded = runs.load_model(base)
  assert loaded.kind == 'saved_model' and os.path.dirname(loaded.path) == base
  detector = client.ModuleClient(loaded.detector(), loaded.description)
  records = results.predict_files(files, detector, str(tmp_path), batch_size=8)
  results.write_json(str(tmp_path / results.OUTPUT_JSON), detector.description, records)
  with open(tmp_path / results.OUTPUT_JSON) as f:
    document = json.load(f)
  assert document['source'].startswith('SavedModel ')
  _check_document(document, image_dir,
                  run_export([(image_dir / n).read_bytes() for n in ('a.png', 'b.jpg')]))


def test_predict_cli_against_a_rest_server(fake_serving, run_export, image_dir, tmp_path):
  before = len(fake_serving.requests)
  result = run_helpers.run_script(
      'predict.py', f'--server={fake_serving.url}', f'--model_name={MODEL_NAME}',
      '--batch_size=2', f'--output_dir={tmp_path}', str(image_dir))
  assert result.returncode == 0, result.stdout + result.stderr
  assert '3 images (1 unreadable)' in result.stdout, result.stdout
  assert len(fake_serving.requests) == before + 1     # bad.jpg alone is never sent
  with open(tmp_path / results.OUTPUT_JSON) as f:
    document = json.load(f)
  assert document['source'].startswith('TF Serving REST ')
  _check_document(document, image_dir,
                  run_export([(image_dir / n).read_bytes() for n in ('a.png', 'b.jpg')]))
