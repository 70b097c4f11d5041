"""Datasets: sources that yield one common record per image, and the tf.data pipeline.

    registry.get_source(spec, split, classes=None, data_dir=None, seed=0)  -> a source
        specs: 'shapes[:key=value,...]', 'voc:DIR' (also LabelImg), 'yolo:DIR',
               'tfrecord:GLOB', 'coco:ANNOTATIONS.json[:IMAGES_DIR]', 'tfds:NAME'
    pipeline.make_dataset(source, training=..., batch_size=..., ...)      -> batches
    transforms.compute_scale / resize_image_and_boxes / flip_left_right    (TF ops)
    python -m faster_rcnn_tf.data.inspect --dataset=SPEC                   (summary + PNG)
    python -m faster_rcnn_tf.data.convert --dataset=SPEC --output=PREFIX   (TFRecords)

Record and batch formats: `faster_rcnn_tf.inputs`. Problem kinds: `problems.py`.
Modules: records (record format, box checks), decode (image files), problems (counter),
source (base class), splits (hashed train / val of data without split files), shapes,
voc, yolo, coco, tfds_source, tfrecord (Object Detection API records, TF ops only),
label_map (label_map.pbtxt), registry, transforms, pipeline, service (tf.data service),
inspect, convert.
"""
