"""Training data, local or under ``s3://``: the one dispatcher above the readers.

- :mod:`models.data.load`: :func:`~models.data.load.load_dataset` picks the reader by type;
- :mod:`models.data.labelled`: classify and tags (a folder per label, JSONL or CSV manifests);
- :mod:`models.data.coco`: detect (COCO JSON with boxes);
- :mod:`models.data.samples`: what they share (:class:`Dataset`, :class:`DatasetError`, the
  stratified split).
"""
