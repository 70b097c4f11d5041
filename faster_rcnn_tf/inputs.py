"""The batch format shared by the data pipeline, the model, training, evaluation and export.

A *record* (one image, produced by a dataset source in `faster_rcnn_tf.data`) is a dict:

    image          uint8  [H, W, 3]   original pixels, RGB
    boxes          float32 [N, 4]     [ymin, xmin, ymax, xmax], continuous pixels of the
                                      original image (see `ops.box_ops` for the convention)
    classes        int32  [N]         1..K (0 is background, never stored)
    difficult      bool   [N]
    image_id       int64  []          the dataset source's id (see each source's docstring)
    original_size  int32  [2]         (height, width) of the original image

A *batch* (what `data.pipeline.make_dataset` yields and `FasterRCNN` consumes) is a dict:

    images         float32 [B, Hp, Wp, 3]  resized RGB pixels in [0, 255] (NOT mean-subtracted:
                                           the model normalizes, per backbone), zero-padded
                                           at the bottom/right to a common size
    image_sizes    int32  [B, 2]     (height, width) of each resized image before padding
    scales         float32 [B]       resized size / original size (same for both axes)
    original_sizes int32  [B, 2]
    image_ids      int64  [B]
    gt_boxes       float32 [B, G, 4] yxyx in resized-image pixels; padding rows are 0
    gt_classes     int32  [B, G]     1..K; 0 marks padding
    gt_difficult   bool   [B, G]

Ground truth is padded to a fixed G (`max_boxes`); a row is valid iff gt_classes > 0.
"""

IMAGES = 'images'
IMAGE_SIZES = 'image_sizes'
SCALES = 'scales'
ORIGINAL_SIZES = 'original_sizes'
IMAGE_IDS = 'image_ids'
GT_BOXES = 'gt_boxes'
GT_CLASSES = 'gt_classes'
GT_DIFFICULT = 'gt_difficult'

# Model outputs in inference mode (boxes in resized-image pixels, yxyx).
DETECTION_BOXES = 'detection_boxes'        # float32 [B, M, 4]
DETECTION_SCORES = 'detection_scores'      # float32 [B, M]
DETECTION_CLASSES = 'detection_classes'    # int32 [B, M], 1..K, 0 = padding
NUM_DETECTIONS = 'num_detections'          # int32 [B]
