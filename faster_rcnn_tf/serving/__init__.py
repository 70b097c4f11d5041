"""Export and serving: SavedModel export (TF Serving layout) and clients.

Modules:
  preprocess     graph-side decode / resize / pad of request images (TF ops only).
  export_module  `DetectionModule`, the tf.Module whose two signatures are exported.
  exporter       writing a version folder BASE/N atomically.
  client         in-process, TF Serving REST and gRPC clients (one result format).

Loading a run folder, a .keras file or a SavedModel is `faster_rcnn_tf.runs.load_model`.
  results        per-image JSON records and annotated pictures (predict.py).

See docs/serving.md for the signatures and how to serve them.
"""
