"""Export and serving: SavedModel export (TF Serving layout) and clients.

Modules:
  preprocess     graph-side decode / resize / pad of request images (TF ops only).
  export_module  `DetectionModule`, the tf.Module whose two signatures are exported.
  run_dir        reading a training run folder (flags.cfg, classes.json, checkpoints) and
                 restoring its model.
  exporter       writing a version folder BASE/N atomically.
  client         local SavedModel, TF Serving REST and gRPC clients (one result format).
  results        per-image JSON records and annotated pictures (predict.py).
  portable       the detector as LiteRT / ONNX take it: one letterboxed image, gather
                 crop pooling, frozen weights.
  tflite_export, onnx_export   conversion to .tflite (builtin ops only) and .onnx.
  portable_export              export.py --format=tflite / onnx from a training run.
  portable_clients             LiteRT and ONNX Runtime clients (predict.py --tflite / --onnx).

See docs/serving.md for the signatures and how to serve them, docs/deploy.md for LiteRT
and ONNX.
"""
