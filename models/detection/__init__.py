"""Object detection: COCO data, augmentation, target assignment, training and mAP evaluation.

The head itself lives in :mod:`models.heads.detect` (registered like every head type);
:func:`models.train` and :func:`models.evaluate` dispatch here for ``type == "detect"``.
"""
