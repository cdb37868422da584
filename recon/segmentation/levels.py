"""Post-processing that makes the network's labels trustworthy, on the model's grid.

- Pelvis and femur labels keep their connected pieces of at least ``MIN_PIECE_SHARE`` of the largest piece
  (a fractured bone keeps its fragments; specks go).
- Vertebrae become instances: the pieces of all vertebra voxels together, cut at their discs (planes square to
  the spine, axial or leaning up to 30 degrees, where a piece narrows to its posterior elements), a slab still
  too tall for one vertebra split by the network's levels (a level on both sides of the cut next to such a slab
  staying one part), and parts whose centres lie closer than ``SAME_LEVEL_MM`` along the body axis merged. The
  network's levels are least reliable where it is least sure of the anatomy, so the CT's discs, not its levels,
  draw the borders wherever they show; but the few slices of a vertebra that the scan cuts off often show no
  disc apart from the vertebra next to them, and are parted from it by the network's levels. An instance under
  ``MIN_PIECE_SHARE`` of the largest is a fragment beside the spine, not a vertebra, unless the scan cuts it
  off. Instances are ordered from inferior to superior and named with consecutive levels (no two L3s, no gap
  between L2 and L4): the run of consecutive instances and the levels up from its lowest that agree with most of
  the network's voxel votes, each instance in the run counting ``INSTANCE_WEIGHT`` of its size besides (a whole
  vertebra the network named after its neighbour is still named; fewest instances on a tie). A vertebra the scan
  cuts off casts no votes when a whole one is in view: the network sees too little of it to tell its level (in a
  crop round L3 it took the part of L4 in view for L3). Instances outside the run (stray pieces in the pelvis
  below L5, or above the labelled levels) go back to background; the run names the levels right when the field
  of view cuts off the top or the bottom.
- Each level's confidence is the share of its voxels that the network itself gave that level.
- The levels' anchor (``level_anchor``) says whether the count rests on the lumbosacral junction: an L5 with
  the sacrum's body below it. Without it the names rest on the network's reading of vertebral shape, which is
  mostly a level high where it errs: in spine-centred crops of 24 development phantoms (seeds
  960000000-23, ``accuracy.LUMBAR_CROPS``, 150 and 250 mm across) the 88 counted from the junction named 222 of
  their 226 vertebrae right, the 142 counted from nothing 277 of 455. A T11 or T12 that the network names is no
  anchor: where the earlier rule took one for it (the network giving a T11 or T12 over half its voxels), 5 of
  11 such crops were named wrong, lumbar vertebrae called T12 with up to all of their voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal
from skimage.segmentation import watershed

MIN_PIECE_SHARE = 0.1
MIN_VERTEBRA_ML = 1.0
SAME_LEVEL_MM = 12.0
VERTEBRA_HEIGHT_MM = 30.0
MIN_DISC_GAP_MM = 18.0
DISC_AREA_SHARE = 0.6
SHALLOW_DISC_AREA_SHARE = 0.8
MAX_VERTEBRA_SLAB_MM = 55.0
DISC_BAND_MM = 6.0
AREA_SMOOTHING_MM = 3.0  # a slice's worth of noise in the area profile is not a disc
DISC_LEANS_DEG = (range(-30, 31, 5), (-10, 0, 10))  # disc planes tried: sagittal, then lateral lean from axial
LEAN_COST_PER_DEG = 0.005
INSTANCE_WEIGHT = 0.1  # each vertebra in the run counts a tenth of its size, whatever the network named it
SACRUM_GAP_MM = 20.0  # the sacrum's top this close to L5's lowest slice: the two meet
SACRUM_BELOW_L5_MM = 20.0  # and the sacrum reaching this far below it: S1's body, not a fragment beside L5
UNANCHORED = ("vertebra levels counted without the lumbosacral junction (L5 on the sacrum) in view: they rest on "
              "the network's reading of vertebral shape and may be a level off; check them on a scan that shows it")
CONNECTED = ndimage.generate_binary_structure(3, 3)


def _disc_plane(sagittal_deg: float, lateral_deg: float) -> tuple[np.ndarray, float]:
    """A plane's unit normal (pointing superior, on an axis-aligned LPS grid) leaning ``sagittal_deg`` towards
    posterior and ``lateral_deg`` towards the left, and how far it leans from axial in all."""
    normal = np.array([np.tan(np.radians(lateral_deg)), np.tan(np.radians(sagittal_deg)), 1.0])
    normal /= np.linalg.norm(normal)
    return normal, float(np.degrees(np.arccos(normal[2])))


DISC_PLANES = [_disc_plane(sagittal, lateral) for sagittal in DISC_LEANS_DEG[0] for lateral in DISC_LEANS_DEG[1]]


@dataclass(frozen=True)
class Levels:
    classes: np.ndarray  # class per voxel after post-processing (uint8)
    confidence: dict[int, float]  # class -> confidence of a vertebra level


def assign_levels(classes: np.ndarray, labels: list[str], spacing_mm: float, hu: np.ndarray) -> Levels:
    """``classes`` (argmax, uint8) cleaned and with vertebra levels made consistent; ``labels`` names the
    classes in order (index 0 background); ``hu`` is the CT on the same grid, which is axis-aligned LPS, so
    index axis 2 points superior."""
    vertebra_classes = [c for c, name in enumerate(labels) if name.startswith("vertebrae_")]
    cleaned = np.zeros_like(classes)
    for c in range(1, len(labels)):
        if c not in vertebra_classes:
            cleaned[_kept_pieces(classes == c)] = c
    voxel_ml = spacing_mm**3 / 1000.0
    instances = _vertebra_instances(classes, vertebra_classes, int(MIN_VERTEBRA_ML / voxel_ml), spacing_mm, hu)
    confidence = {}
    for mask, level in zip(instances, _best_levels(instances, classes, vertebra_classes), strict=True):
        if level:  # instances outside the best run stay background
            cleaned[mask] = level
            confidence[level] = float(np.mean(classes[mask] == level))
    return Levels(cleaned, confidence)


def level_anchor(classes: np.ndarray, labels: list[str], spacing_mm: float) -> str | None:
    """What the vertebra levels in ``classes`` (after ``assign_levels``; index axis 2 superior) were counted
    from: "sacrum" where an L5 is in view with the sacrum below it (its top within ``SACRUM_GAP_MM`` of L5's
    lowest slice, its body reaching ``SACRUM_BELOW_L5_MM`` below that slice), else "none"; None where no
    vertebra is named."""
    if not np.isin(classes, [c for c, name in enumerate(labels) if name.startswith("vertebrae_")]).any():
        return None
    l5, sacrum = (np.flatnonzero((classes == labels.index(name)).any(axis=(0, 1))) if name in labels
                  else np.empty(0, int) for name in ("vertebrae_L5", "sacrum"))
    if (l5.size and sacrum.size and (l5[0] - sacrum[-1]) * spacing_mm <= SACRUM_GAP_MM
            and (l5[0] - sacrum[0]) * spacing_mm >= SACRUM_BELOW_L5_MM):
        return "sacrum"
    return "none"


def _kept_pieces(mask: np.ndarray) -> np.ndarray:
    pieces, count = ndimage.label(mask, structure=CONNECTED)
    if count <= 1:
        return mask
    sizes = np.bincount(pieces.ravel())[1:]
    keep = np.flatnonzero(sizes >= MIN_PIECE_SHARE * sizes.max()) + 1
    return np.isin(pieces, keep)


def _vertebra_instances(classes, vertebra_classes, min_voxels: int, spacing_mm: float,
                        hu: np.ndarray) -> list[np.ndarray]:
    """Masks of vertebra instances, ordered from inferior to superior."""
    spine = np.isin(classes, vertebra_classes)
    pieces, count = ndimage.label(spine, structure=CONNECTED)
    parts = []
    for piece in range(1, count + 1):
        parts += _piece_parts(pieces == piece, classes, vertebra_classes, min_voxels // 4, spacing_mm, hu)
    parts = [part for part in parts if np.count_nonzero(part) >= min_voxels // 4]
    parts.sort(key=_height)
    merged: list[np.ndarray] = []
    for part in parts:
        if merged and (_height(part) - _height(merged[-1])) * spacing_mm < SAME_LEVEL_MM:
            merged[-1] = merged[-1] | part
        else:
            merged.append(part)
    sizes = [np.count_nonzero(mask) for mask in merged]
    fragment = MIN_PIECE_SHARE * max(sizes, default=0)
    return [mask for mask, size in zip(merged, sizes, strict=True)
            if size >= min_voxels and (size >= fragment or _at_grid_end(mask))]


def _piece_parts(piece: np.ndarray, classes: np.ndarray, vertebra_classes: list[int], min_voxels: int,
                 spacing_mm: float, hu: np.ndarray) -> list[np.ndarray]:
    """``piece`` cut into slabs at its discs. A slab too tall for one vertebra holds a disc the CT did not show,
    and the network's levels split it. Next to such a slab, a level on both sides of the cut between them is
    one vertebra that the cut crossed (an oblique disc's narrowest slice runs through the vertebra behind it),
    and stays one part; two slabs that each fit one vertebra stay apart whatever the network named them."""
    parts: list[np.ndarray] = []
    before: dict[int, np.ndarray] = {}
    before_tall = False
    for slab in _slabs(piece, _discs(piece, spacing_mm), hu, spacing_mm):
        if not slab.any():
            continue
        tall = _extent_mm(slab, spacing_mm) > MAX_VERTEBRA_SLAB_MM
        if tall:
            split = {c: slab & (classes == c) for c in vertebra_classes}
        else:
            split = {_majority(part, classes): part
                     for part in _sliver_apart(slab, classes, vertebra_classes, min_voxels)}
        for c, part in split.items():
            if c in before and (tall or before_tall):
                split[c] = before[c]
                split[c] |= part  # in place: the part already listed grows
            else:
                parts.append(part)
        before, before_tall = split, tall
    return parts


def _majority(mask: np.ndarray, classes: np.ndarray) -> int:
    return int(np.bincount(classes[mask]).argmax())


def _sliver_apart(slab: np.ndarray, classes: np.ndarray, vertebra_classes: list[int],
                  min_voxels: int) -> list[np.ndarray]:
    """``slab``, and apart from it the sliver of the next vertebra that the scan cuts off where the slab reaches
    one end of the grid (its other end in view): no disc shows between a vertebra and the few slices of its
    neighbour that the scan holds, so the network's levels part them. The sliver is what the network names a
    level beyond the slab's own towards that end (superior at the top slice), in pieces that reach the end
    slice. A slab that spans the grid shows no end of its own vertebra to tell a sliver from, and stays whole."""
    ends = [end for end in (0, -1) if slab[:, :, end].any()]
    if len(ends) != 1:
        return [slab]
    rank = np.full(256, -1)
    rank[vertebra_classes] = np.arange(len(vertebra_classes))  # superior to inferior
    ranks = np.where(slab, rank[classes], -1)
    own = rank[_majority(slab, classes)]
    beyond = (ranks > own) if ends[0] == 0 else (ranks >= 0) & (ranks < own)
    pieces, _ = ndimage.label(beyond, structure=CONNECTED)
    sliver = np.isin(pieces, np.unique(pieces[:, :, ends[0]])[1:])
    return [slab & ~sliver, sliver] if np.count_nonzero(sliver) >= min_voxels else [slab]


def _at_grid_end(mask: np.ndarray) -> bool:
    """Whether ``mask`` reaches the bottom or top slice: a vertebra the scan cuts off may be any size."""
    return bool(mask[:, :, 0].any() or mask[:, :, -1].any())


@dataclass(frozen=True)
class _Disc:
    """A disc's plane: the points ``p`` (voxel indices) with ``(p - centre) @ normal == offset``, ``centre`` the
    voxel nearest the piece's centre of mass; ``height`` is where it crosses the vertical line through that
    centre, in slices from the centre."""

    normal: np.ndarray  # unit, pointing superior
    offset: float
    narrowing: float  # the piece's area there over the largest areas near it (``_narrowing``)
    lean: float  # degrees from axial

    @property
    def height(self) -> float:
        return self.offset / float(self.normal[2])

    @property
    def rank(self) -> float:
        """Narrowing, with each degree of lean costing ``LEAN_COST_PER_DEG``: a leaning plane must narrow clearly
        more than the axial one, or the piece's own shape (a process hanging past the disc, a ragged network
        outline) would tilt the cut."""
        return self.narrowing + LEAN_COST_PER_DEG * self.lean


def _discs(piece: np.ndarray, spacing_mm: float) -> list[_Disc]:
    """The planes where ``piece`` narrows to a disc level, inferior to superior. A disc lies square to the
    spine, not to the scan: where the spine leans (lordosis, a tilted patient) a disc crosses several axial
    slices and no axial slice narrows, so each plane of ``DISC_PLANES`` is tried and each disc takes the one
    that narrows most (``_Disc.rank``). A disc plane is a minimum of the piece's area per plane, at most
    ``DISC_AREA_SHARE`` of the largest areas within ``VERTEBRA_HEIGHT_MM`` below and above it (only the
    posterior elements cross a disc level), at least ``MIN_DISC_GAP_MM`` from a narrower one. A stretch
    between them still too tall for one vertebra holds a disc the network partly filled: it is cut at its
    narrowest minimum at most ``SHALLOW_DISC_AREA_SHARE`` of its neighbours, if it has one
    ``MIN_DISC_GAP_MM`` from both ends."""
    _, centred = _centred(piece)
    cut_off = (bool(piece[:, :, 0].any()), bool(piece[:, :, -1].any()))
    candidates = sorted((disc for normal, lean in DISC_PLANES
                         for disc in _narrowings(centred, normal, lean, spacing_mm, cut_off)),
                        key=lambda disc: disc.rank)
    gap = MIN_DISC_GAP_MM / spacing_mm
    discs: list[_Disc] = []
    for disc in candidates:
        if disc.narrowing <= DISC_AREA_SHARE and all(abs(disc.height - kept.height) >= gap for kept in discs):
            discs.append(disc)
    ends = [float(centred[:, 2].min()), *sorted(disc.height for disc in discs), float(centred[:, 2].max())]
    for low, high in zip(ends[:-1], ends[1:]):
        if (high - low + 1) * spacing_mm > MAX_VERTEBRA_SLAB_MM:
            inner = [d for d in candidates if low + gap <= d.height <= high - gap
                     and d.narrowing <= SHALLOW_DISC_AREA_SHARE]
            discs += inner[:1]
    return sorted(discs, key=lambda disc: disc.height)


def _centred(piece: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The piece's voxel indices, and the same about the voxel nearest its centre of mass (``_Disc``'s centre)."""
    points = np.argwhere(piece)
    return points, points - np.rint(points.mean(axis=0))


def _narrowings(points: np.ndarray, normal: np.ndarray, lean: float, spacing_mm: float,
                cut_off: tuple[bool, bool]) -> list[_Disc]:
    """Every minimum of the area per plane square to ``normal`` of the piece's ``points`` (about its centre)."""
    along = points @ normal
    low = np.floor(along.min())
    raw = np.bincount(np.floor(along - low + 0.5).astype(int)).astype(float)
    area = ndimage.gaussian_filter1d(raw, AREA_SMOOTHING_MM / spacing_mm)
    minima, _ = signal.find_peaks(-area)
    return [_Disc(normal, float(k + low), _narrowing(area, raw, int(k), spacing_mm, cut_off), lean)
            for k in minima]


def _narrowing(area: np.ndarray, raw: np.ndarray, k: int, spacing_mm: float, cut_off: tuple[bool, bool]) -> float:
    """Plane ``k``'s smoothed area over the smaller of the largest smoothed areas within ``VERTEBRA_HEIGHT_MM``
    below and above. Where that neighbourhood runs to an end of the piece that the scan cuts off (``cut_off``:
    below, above), the raw areas count too: smoothing blurs the few slices of a sliver of vertebra at the edge
    into the disc below it, and would hide the disc."""
    reach = max(1, round(VERTEBRA_HEIGHT_MM / spacing_mm))
    low, high = max(0, k - reach), min(len(area), k + 1 + reach)
    below, above, narrowest = area[low:k].max(initial=0), area[k + 1:high].max(initial=0), area[k]
    if low == 0 and cut_off[0]:
        below, narrowest = max(below, raw[low:k].max(initial=0)), min(narrowest, raw[k])
    if high == len(raw) and cut_off[1]:
        above, narrowest = max(above, raw[k + 1:high].max(initial=0)), min(narrowest, raw[k])
    return float(narrowest / max(min(below, above), 1e-9))


def _slabs(piece: np.ndarray, discs: list[_Disc], hu: np.ndarray, spacing_mm: float) -> list[np.ndarray]:
    """``piece`` cut at each disc plane. The voxels more than ``DISC_BAND_MM`` from a disc seed their vertebra
    (the band is a third of the slab where that is less); the rest (endplates, and the articular and spinous
    processes that reach past the disc level) go to the seed they reach first through the brightest bone
    (marker watershed on the inverted HU), so a joint or a ligament, not the plane, parts two vertebrae."""
    if not discs:
        return [piece]
    points, centred = _centred(piece)
    above = np.stack([centred @ disc.normal - disc.offset for disc in discs], axis=1)
    slab = np.count_nonzero(above > 0, axis=1)
    heights = [float(centred[:, 2].min()), *(disc.height for disc in discs), float(centred[:, 2].max())]
    band = np.array([min(round(DISC_BAND_MM / spacing_mm), (high - low) // 3)
                     for low, high in zip(heights[:-1], heights[1:])])
    rows = np.arange(len(points))
    clear_below = np.where(slab > 0, above[rows, np.maximum(slab - 1, 0)] >= band[slab], True)
    clear_above = np.where(slab < len(discs), -above[rows, np.minimum(slab, len(discs) - 1)] > band[slab], True)
    seeds = np.zeros(piece.shape, np.int32)
    seed = clear_below & clear_above
    seeds[tuple(points[seed].T)] = slab[seed] + 1
    vertebrae = watershed(-hu, markers=seeds, mask=piece)
    return [vertebrae == number for number in range(1, len(discs) + 2)]


def _extent_mm(mask: np.ndarray, spacing_mm: float) -> float:
    heights = np.flatnonzero(mask.any(axis=(0, 1)))
    return float(heights[-1] - heights[0] + 1) * spacing_mm if heights.size else 0.0


def _height(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[2].mean())


def _best_levels(instances, classes, vertebra_classes) -> list[int]:
    """A level per instance (inferior to superior), 0 for those left out: the run of consecutive instances,
    named with consecutive levels, whose voxels agree most with the network's votes (on a tie, the shortest).

    ``vertebra_classes`` run from superior (T11) to inferior (L5), as recon's vocabulary lists them."""
    inferior_first = list(reversed(vertebra_classes))
    votes = np.array([[np.count_nonzero(classes[mask] == c) for c in inferior_first] for mask in instances])
    cut_off = np.array([_at_grid_end(mask) for mask in instances], dtype=bool)
    if not cut_off.all():
        votes[cut_off] = 0  # a vertebra the scan cuts off shows too little of itself to tell its level
    votes = votes + INSTANCE_WEIGHT * np.array([[np.count_nonzero(mask)] for mask in instances])
    best, best_key = (0, 0, 0), (-1, 0)
    for start in range(len(instances)):
        for first in range(len(inferior_first)):
            score = 0
            for length in range(1, min(len(instances) - start, len(inferior_first) - first) + 1):
                score += votes[start + length - 1, first + length - 1]
                if (score, -length) > best_key:
                    best, best_key = (start, first, length), (score, -length)
    start, first, length = best
    levels = [0] * len(instances)
    for k in range(length):
        levels[start + k] = inferior_first[first + k]
    return levels
