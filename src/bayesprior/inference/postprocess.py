"""Post-processing of binary masks."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_connected_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest foreground component (full connectivity: 26 neighbours in 3D).

    Meant for single-mass targets (a tumour); never use it for multi-focal lesions. An empty mask
    comes back empty. Returns a uint8 array of the same shape.
    """
    binary = np.asarray(mask) > 0
    labelled, n = ndimage.label(binary, structure=ndimage.generate_binary_structure(binary.ndim, binary.ndim))
    if n <= 1:
        return binary.astype(np.uint8)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return (labelled == int(sizes.argmax())).astype(np.uint8)
