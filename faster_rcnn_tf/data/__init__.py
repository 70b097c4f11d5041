"""Datasets: sources that yield one common record per image, and the tf.data pipeline.

    registry.get_source(spec, split, classes=None, data_dir=None, seed=0)  -> a source
        specs: 'shapes[:key=value,...]', 'voc:DIR', 'coco:ANNOTATIONS.json[:IMAGES_DIR]',
               'tfds:NAME'
    pipeline.make_dataset(source, training=..., batch_size=..., ...)      -> batches
    transforms.compute_scale / resize_image_and_boxes / flip_left_right    (TF ops)
    python -m faster_rcnn_tf.data.inspect --dataset=SPEC                   (summary + PNG)

Record and batch formats: `faster_rcnn_tf.inputs`. Problem kinds: `problems.py`.
Modules: records (record format, box checks), decode (image files), problems (counter),
source (base class), shapes, voc, coco, tfds_source, registry, transforms, pipeline,
inspect.
"""
