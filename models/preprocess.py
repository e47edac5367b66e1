"""The one image preprocessing shared by training, evaluation and serving.

The whole image is resized to a square (no crop) so that every pixel the user uploaded is seen
by the model and boxes map back to the original by scaling x and y independently. The result
stays uint8: normalisation happens on the device, batched, inside the fleet.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def preprocess_image(image: Image.Image, size: int) -> np.ndarray:
    """Return ``image`` as a ``size x size x 3`` uint8 RGB array.

    ``image`` should already be in RGB mode and, for JPEGs, draft-scaled by the decoder.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image, dtype=np.uint8)
