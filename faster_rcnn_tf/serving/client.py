"""Detection clients with one result format: a model loaded in this process (a SavedModel,
a checkpoint or a .keras file, through `runs.load_model`), TF Serving's REST API and TF
Serving's gRPC API.

Every client has `detect(images)`: a list of N encoded images (bytes, JPEG or PNG) ->
`Outputs`, a dict of numpy arrays (M = max detections of the export):
  detection_boxes        float32 [N, M, 4]  [ymin, xmin, ymax, xmax] normalized to the image
  detection_scores       float32 [N, M]
  detection_classes      int32   [N, M]     1..K, 0 = padding
  detection_class_names  object  [N, M]     str, '' = padding
  num_detections         int32   [N]
All use the exported `serving_default` signature (input `image_bytes`, string [N]); an
image the graph cannot decode comes back with num_detections 0.

TF Serving wire formats (https://www.tensorflow.org/tfx/serving/api_rest and
tensorflow_serving/apis/predict.proto):
  REST  POST {server}/v1/models/{name}[/versions/{v}]:predict with
        {"signature_name": "serving_default", "instances": [{"b64": "<base64>"}, ...]}
        (row format, a single named input: each instance is the input's value, binary
        strings as {"b64": ...}); the answer is {"predictions": [{output name: value for
        that image}, ...]} or {"error": "..."}.
  gRPC  PredictionService.Predict(PredictRequest{model_spec{name, signature_name
        [, version]}, inputs{"image_bytes": TensorProto DT_STRING [N]}}) -> PredictResponse
        {outputs: name -> TensorProto}. Uses the tensorflow-serving-api package.
"""

import base64
import json
import urllib.error
import urllib.request

import numpy as np

from faster_rcnn_tf.serving import export_module as em

DEFAULT_TIMEOUT_S = 60.0
# gRPC's default 4 MB message limit is too small for a batch of photos.
GRPC_MAX_MESSAGE_BYTES = 1 << 30


class ServingError(Exception):
  """A failed request (unreachable server, error answer, malformed answer): one line."""


def _decode_name(value):
  if isinstance(value, dict) and 'b64' in value:
    return base64.b64decode(value['b64']).decode('utf-8', 'replace')
  if isinstance(value, bytes):
    return value.decode('utf-8', 'replace')
  return str(value)


def to_outputs(raw, num_images):
  """Any mapping of the five outputs (tensors, numpy arrays, nested lists) -> `Outputs`.

  Checks names and shapes; raises ServingError when something is missing or the batch
  size is not num_images.
  """
  missing = [name for name in em.OUTPUT_NAMES if name not in raw]
  if missing:
    raise ServingError(f'answer lacks outputs {missing} (has {sorted(raw)})')
  boxes = np.asarray(raw[em.DETECTION_BOXES], np.float32)
  scores = np.asarray(raw[em.DETECTION_SCORES], np.float32)
  classes = np.asarray(raw[em.DETECTION_CLASSES]).astype(np.int32)
  num = np.asarray(raw[em.NUM_DETECTIONS]).astype(np.int32).reshape(-1)
  names_in = raw[em.DETECTION_CLASS_NAMES]
  names_in = names_in.numpy() if hasattr(names_in, 'numpy') else names_in
  rows = [[_decode_name(v) for v in row] for row in names_in]
  if scores.ndim != 2 or len(rows) != scores.shape[0] or any(
      len(row) != scores.shape[1] for row in rows):
    raise ServingError(f'detection_class_names does not match detection_scores '
                       f'{scores.shape}')
  names = np.empty(scores.shape, dtype=object)
  for i, row in enumerate(rows):
    names[i, :] = row
  if boxes.ndim != 3 or boxes.shape[0] != num_images or boxes.shape[2] != 4:
    raise ServingError(f'detection_boxes has shape {boxes.shape}, expected '
                       f'[{num_images}, M, 4]')
  m = boxes.shape[1]
  for name, value in ((em.DETECTION_SCORES, scores), (em.DETECTION_CLASSES, classes),
                      (em.DETECTION_CLASS_NAMES, names)):
    if value.shape != (num_images, m):
      raise ServingError(f'{name} has shape {value.shape}, expected {(num_images, m)}')
  if num.shape != (num_images,):
    raise ServingError(f'num_detections has shape {num.shape}, expected ({num_images},)')
  return {em.DETECTION_BOXES: boxes, em.DETECTION_SCORES: scores,
          em.DETECTION_CLASSES: classes, em.DETECTION_CLASS_NAMES: names,
          em.NUM_DETECTIONS: num}


# ---- local: SavedModel and in-process module ----

class ModuleClient:
  """Runs a `DetectionModule`, or a SavedModel's signatures, in this process (the
  `detector()` of `runs.load_model`'s result)."""

  def __init__(self, module, description='in-process model'):
    self.module = module
    self.description = description

  def detect(self, images):
    import tensorflow as tf
    try:
      out = self.module.serve_image_bytes(tf.constant(list(images), tf.string))
    except tf.errors.OpError as e:
      raise ServingError(f'{self.description}: {type(e).__name__}: {e.message}')
    return to_outputs(out, len(images))


# ---- TF Serving REST ----

def rest_predict_url(server, model_name, version=None):
  """{server}/v1/models/{model_name}[/versions/{version}]:predict"""
  url = f'{server.rstrip("/")}/v1/models/{model_name}'
  if version is not None:
    url += f'/versions/{int(version)}'
  return url + ':predict'


def build_rest_request(images, signature_name=em.SERVING_DEFAULT):
  """The JSON body (a dict) of a REST predict request for encoded images."""
  return {'signature_name': signature_name,
          'instances': [{'b64': base64.b64encode(bytes(b)).decode('ascii')} for b in images]}


def parse_rest_response(body, num_images):
  """A REST predict answer (parsed JSON) -> `Outputs`; {"error": ...} -> ServingError."""
  if not isinstance(body, dict):
    raise ServingError(f'answer is not a JSON object: {str(body)[:200]}')
  if 'error' in body:
    raise ServingError(f'server error: {body["error"]}')
  predictions = body.get('predictions')
  if not isinstance(predictions, list):
    raise ServingError(f'answer has no "predictions" list (keys: {sorted(body)})')
  if len(predictions) != num_images:
    raise ServingError(f'{len(predictions)} predictions for {num_images} images')
  if num_images == 0:
    raise ServingError('empty request')
  if not all(isinstance(p, dict) for p in predictions):
    raise ServingError('predictions are not objects (is this the Faster R-CNN export?)')
  raw = {}
  for name in em.OUTPUT_NAMES:
    if not all(name in p for p in predictions):
      raise ServingError(f'predictions lack "{name}" (keys: {sorted(predictions[0])})')
    raw[name] = [p[name] for p in predictions]
  return to_outputs(raw, num_images)


class RestClient:
  """TF Serving's REST predict API (default port 8501)."""

  def __init__(self, server, model_name, version=None, timeout=DEFAULT_TIMEOUT_S):
    if '://' not in server:
      server = 'http://' + server
    self.url = rest_predict_url(server, model_name, version)
    self.timeout = timeout
    self.description = f'TF Serving REST {self.url}'

  def detect(self, images):
    if not images:
      raise ServingError('no images to send')
    data = json.dumps(build_rest_request(images)).encode('utf-8')
    request = urllib.request.Request(self.url, data=data, method='POST',
                                     headers={'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        text = response.read().decode('utf-8')
    except urllib.error.HTTPError as e:
      detail = e.read().decode('utf-8', 'replace')
      try:
        detail = json.loads(detail).get('error', detail)
      except (ValueError, AttributeError):
        pass
      raise ServingError(f'{self.url}: HTTP {e.code}: {str(detail)[:500]}')
    except (urllib.error.URLError, OSError) as e:
      raise ServingError(f'{self.url}: cannot reach the server: {getattr(e, "reason", e)}')
    try:
      body = json.loads(text)
    except ValueError:
      raise ServingError(f'{self.url}: answer is not JSON: {text[:200]}')
    return parse_rest_response(body, len(images))


# ---- TF Serving gRPC ----

def _serving_apis():
  try:
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc
  except ImportError as e:
    raise ServingError(f'gRPC needs the tensorflow-serving-api package '
                       f'(pip install tensorflow-serving-api): {e}')
  return predict_pb2, prediction_service_pb2_grpc


def build_predict_request(model_name, images, signature_name=em.SERVING_DEFAULT,
                          version=None):
  """A tensorflow_serving PredictRequest for encoded images.

  model_spec.name = model_name, model_spec.signature_name = signature_name (and
  model_spec.version if given); inputs['image_bytes'] = TensorProto DT_STRING [N] with one
  string_val per image.
  """
  from tensorflow.core.framework import types_pb2
  predict_pb2, _ = _serving_apis()
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = int(version)
  tensor = request.inputs[em.IMAGE_BYTES]
  tensor.dtype = types_pb2.DT_STRING
  tensor.tensor_shape.dim.add().size = len(images)
  tensor.string_val.extend(bytes(b) for b in images)
  return request


def parse_predict_response(response, num_images):
  """A PredictResponse -> `Outputs`."""
  import tensorflow as tf
  raw = {name: tf.make_ndarray(response.outputs[name])
         for name in em.OUTPUT_NAMES if name in response.outputs}
  return to_outputs(raw, num_images)


class GrpcClient:
  """TF Serving's gRPC PredictionService (default port 8500)."""

  def __init__(self, address, model_name, version=None, timeout=DEFAULT_TIMEOUT_S):
    import grpc
    _, service = _serving_apis()
    self.address = address
    self.model_name = model_name
    self.version = version
    self.timeout = timeout
    self._grpc = grpc
    options = [('grpc.max_send_message_length', GRPC_MAX_MESSAGE_BYTES),
               ('grpc.max_receive_message_length', GRPC_MAX_MESSAGE_BYTES)]
    self._channel = grpc.insecure_channel(address, options=options)
    self._stub = service.PredictionServiceStub(self._channel)
    self.description = f'TF Serving gRPC {address} model {model_name}'

  def detect(self, images):
    if not images:
      raise ServingError('no images to send')
    request = build_predict_request(self.model_name, images, version=self.version)
    try:
      response = self._stub.Predict(request, timeout=self.timeout)
    except self._grpc.RpcError as e:
      raise ServingError(f'gRPC {self.address}: {e.code().name}: {e.details()}')
    return parse_predict_response(response, len(images))

  def close(self):
    self._channel.close()
