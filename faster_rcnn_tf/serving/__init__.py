"""Export and serving: SavedModel export (TF Serving layout) and clients.

Modules:
  preprocess     graph-side decode / resize / pad of request images (TF ops only).
  export_module  `DetectionModule`, the tf.Module whose two signatures are exported.
  run_dir        reading a training run folder (flags.cfg, classes.json, checkpoints) and
                 restoring its model.
  exporter       writing a version folder BASE/N atomically.
  client         local SavedModel, TF Serving REST and gRPC clients (one result format).
  results        per-image JSON records and annotated pictures (predict.py).

See docs/serving.md for the signatures and how to serve them.
"""
