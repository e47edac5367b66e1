"""The generators moved to :mod:`models.synthetic` (the demo and benchmarks use them too)."""

from models.synthetic import (
    COLOURS,
    SHAPES,
    Obj,
    coloured_shape_image,
    colours_image,
    scene,
    shape_image,
)

__all__ = [
    "COLOURS",
    "SHAPES",
    "Obj",
    "coloured_shape_image",
    "colours_image",
    "scene",
    "shape_image",
]
