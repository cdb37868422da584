"""Pelvic bones that the network found where the lumbar spine is, dropped (on the model's grid, after the
vertebrae are named).

In a narrow field of view round the lumbar spine (spine CT is often reconstructed 150-200 mm across) the
network, which learnt the pelvis and the spine together, calls pieces of vertebrae and their transverse
processes hip bone, femur or sacrum. The vertebrae show where the pelvis cannot be, since every pelvic bone
reaches below the lumbar spine: a piece of one must reach below the centre of each level at or above its
``HIGHEST_LEVEL`` and, where no level below that one is in view, below the lowest vertebra voxel. Otherwise it
returns to background.
- Femurs: L5. The femoral heads lie several centimetres below the sacral promontory, so a femur always reaches
  below every vertebra.
- Sacrum: L4. It begins at the L5/S1 disc; L4 rather than L5 leaves room for a level named one off.
- Hip bones: L3. The iliac crest reaches the L4 body or the L3/L4 disc (the intercristal line); a real crest
  beside L3 in a scan that ends there is the rare case this drops.
Levels count by their centres where a lower level is in view, not by their ends: where the network fails on a
crop a level can spill down the scan with its mistakes (in one crop of a real CT round L2-L5, "L3" reached the
bottom slice beside the real iliac crests while its centre stayed at L3). Where the levels are named a level
high, bits of a real crest above what was named L3 go too.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from recon.anatomy import VERTEBRAE
from recon.segmentation.levels import CONNECTED

HIGHEST_LEVEL = {"femur_left": "vertebrae_L5", "femur_right": "vertebrae_L5", "sacrum": "vertebrae_L4",
                 "hip_left": "vertebrae_L3", "hip_right": "vertebrae_L3"}


def drop_pelvis_beside_spine(classes: np.ndarray, labels: list[str]) -> np.ndarray:
    """``classes`` (uint8, vertebrae named, index axis 2 superior) with the pieces of pelvic bones that reach no
    lower than the vertebrae allow set to background; ``labels`` names the classes."""
    heights = {name: np.nonzero(classes == c)[2] for c, name in enumerate(labels) if name in VERTEBRAE}
    heights = {name: h for name, h in heights.items() if h.size}
    kept = classes.copy()
    for c, name in enumerate(labels):
        limit = _must_reach_below(name, heights)
        if limit == np.inf:
            continue
        pieces, _ = ndimage.label(classes == c, structure=CONNECTED)
        for piece, box in enumerate(ndimage.find_objects(pieces), start=1):
            if box is not None and box[2].start >= limit:
                kept[box][pieces[box] == piece] = 0
    return kept


def _must_reach_below(name: str, heights: dict[str, np.ndarray]) -> float:
    """The slice that a piece of bone ``name`` must reach below, given the slices of each vertebra level in
    view (``heights``); infinite where nothing limits it."""
    if name not in HIGHEST_LEVEL or not heights:
        return np.inf
    cut = VERTEBRAE.index(HIGHEST_LEVEL[name]) + 1
    limit = min((float(heights[v].mean()) for v in VERTEBRAE[:cut] if v in heights), default=np.inf)
    if not any(v in heights for v in VERTEBRAE[cut:]):
        limit = min(limit, min(float(h.min()) for h in heights.values()))
    return limit
