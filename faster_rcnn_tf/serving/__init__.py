"""Export and serving: SavedModel export (TF Serving layout), LiteRT / ONNX exports and
clients.

Modules:
  preprocess     graph-side decode / resize / pad of request images (TF ops only).
  export_module  `DetectionModule`, the tf.Module whose two signatures are exported.
  exporter       writing a version folder BASE/N atomically.
  client         in-process, TF Serving REST and gRPC clients (one result format).
  results        per-image JSON records and annotated pictures (predict.py).
  portable       the detector as LiteRT / ONNX take it: one letterboxed image, gather
                 crop pooling, TF's NMS kernel, frozen weights.
  tflite_export, onnx_export   conversion to .tflite (builtin ops only) and .onnx.
  portable_export              export.py --format=tflite / onnx of a trained model.
  portable_clients             LiteRT and ONNX Runtime clients (predict.py --tflite / --onnx).

Loading a run folder, a .keras file or a SavedModel is `faster_rcnn_tf.runs.load_model`.
See docs/serving.md for the signatures and how to serve them, docs/deploy.md for LiteRT
and ONNX.
"""
