"""tagfleet models: the fleet of classify, tags and detect functions on open_clip backbones."""

from models.preprocess import preprocess_image

__all__ = ["preprocess_image"]
