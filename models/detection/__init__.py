"""detect's own maths for :mod:`models.tasks.detect`: augmentation with boxes, FCOS target
assignment and loss, box matching and mAP. Nothing here imports the rest of ``models``.

The head lives in :mod:`models.heads.detect`, the COCO reader in :mod:`models.data.coco`.
"""
