"""Detection evaluation: PASCAL VOC AP, COCO metrics, result files, reports.

Pure numpy + pycocotools + matplotlib; no TensorFlow import, so these modules are quick
to import and test. Import the submodules directly:

  voc_metrics    `evaluate_voc`, `voc_ap`
  coco_metrics   `evaluate_coco`, `build_coco_ground_truth`, `run_coco_eval`
  detections_io  COCO results files, model outputs -> detections / results
  report         per-class table, metrics.json, precision-recall PNGs
  common         `Detections`, gt dict helpers (box convention in its docstring)
"""
