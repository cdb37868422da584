"""Published morphometry ranges the phantoms draw from (millimetres and degrees).

Sources, as ranges read off their tables (adult, mixed sex):
- Vertebral bodies: Panjabi MM et al., Thoracic human vertebrae, Spine 1991;16(8):888-901 (T11-T12) and
  Human lumbar vertebrae, Spine 1992;17(3):299-306 (L1-L5): endplate width 38-54, depth 28-38, body height
  21-28 mm.
- Pedicles: Zindrick MR et al., Analysis of the morphometric characteristics of the thoracic and lumbar
  pedicles, Spine 1987;12(2):160-166: isthmus width about 7-8 mm at T11-T12, 8-9 at L1 rising to 15-18 at
  L5; height 13-18 mm; transverse angle about 5 degrees at T11-T12, 10-13 at L1 rising to about 30 at L5.
- Canal: interpedicular distance about 18-20 mm at T11-T12 rising to 24-28 mm at L5 (Zindrick 1987).
- Discs: lumbar disc height 8-12 mm, lower thoracic 5-8 mm (Frobin W et al., Precision measurement of
  disc height, vertebral height and sagittal plane displacement, Clin Biomech 1997;12 Suppl 1:S1-S63).
- Sagittal alignment: lumbar lordosis L1-S1 40-60 degrees (Roussouly P et al., Spine 2005;30(3):346-353);
  pelvic incidence 52 +- 10 and pelvic tilt 12 +- 6 degrees in asymptomatic adults (Legaye J et al., Eur
  Spine J 1998;7:99-103; Vialle R et al., J Bone Joint Surg Am 2005;87(2):260-267), drawn over about two
  standard deviations: incidence 35-72, tilt 0-25 (sacral slope, their difference, 10-72).
- Pelvis: inter-ASIS distance 210-260 mm; hip joint centre 30% of it below, 14% medial and 22% posterior
  of the ASIS (Bell AL et al., J Biomech 1990;23(6):617-621). Acetabular inclination 40-55 and
  anteversion 12-25 degrees (Tannast M et al., Clin Orthop 2007;455:1-9 reviewing Murray's definitions).
- Femur: head diameter 40-55 mm, neck-shaft angle 125-135 degrees, anteversion 8-20 degrees, shaft
  diameter 24-30 mm with a 4-6 mm cortex (Gilligan I et al., Anat Rec 2013;296(5):749-759; Noble PC et al.,
  Clin Orthop 1988;235:148-165).
- Hounsfield units: trabecular bone of L1 above about 160 HU healthy and below about 110 HU osteoporotic
  (Pickhardt PJ et al., Ann Intern Med 2013;158(8):588-595); cortical bone 1000-1900 HU.
- Cortical shells: the vertebral body's shell is 0.2-0.7 mm thick, endplates somewhat thicker (Silva MJ et
  al., Bone 1994;15(4):409-414; Ritzel H et al., J Bone Miner Res 1997;12(1):89-95). Phantoms draw it
  0.2-0.8 mm, and the pelvis's 0.4-1.5 mm, so that bone is not always a bright closed shell: at clinical
  voxel sizes a thin shell blurs into a rim barely brighter than the cancellous bone inside.
- Ilium detail (textbook proportions, not read off one table): the iliac wing is thin in the fossa (a few
  millimetres, translucent in places) and thick along its crest and above the acetabulum. Ranges in
  ``ILIUM_RANGES``.
- Iliac height: on CT of 22 hips the hip centre lay 0.33 +- 0.02 (0.30 in men, 0.35 in women) of the pelvis's
  height (iliac crest to ischial tuberosity) above its lowest point (J Bone Joint Surg Br 2010;92-B Supp II:296,
  an abstract), so with that height taken as 190-235 mm (an assumed adult range, not from that abstract) the
  crest lies about 124-165 mm above the hip centre. The default phantoms' wings (a fixed ellipsoid above Bell's
  ASIS) put it 126-137 mm above; with ``make_phantom(iliac_crest_raise_mm=)`` each wing grows upwards by an
  amount drawn from that range, its lower end about where it was.
- Iliac fossa: on CT of 200 hemipelves every ilium had an elliptical area of about 22 cm^2 where its inner and
  outer cortices come within 5 mm of each other, and 48% converged there to a single cortex; the area begins
  14-20 mm below the top of the crest (Wang M et al., Defining the iliac wing osseous fixation pathways,
  2020, Mendeley Data doi:10.17632/n5bkvctf4c.1). Phantoms hollow the wing's inner face so that its middle
  thins to a plate ``iliac_fossa_mm`` thick (``ILIAC_FOSSA_RANGES``: from a single cortex to 4 mm), and it thickens
  again towards the crest and the posterior ilium (``pelvis.py``'s ``_iliac_fossa``).
- Sacrum (textbook proportions): about 10-12 cm from the S1 endplate to the apex, narrowing from the alae to
  2-3 cm at the apex, concave in front with the lower segments curving forward (the sacral kyphosis).
  The posterior ilium is a thick block behind and beside the alae, meeting the sacrum across the auricular
  surface (S1-S3). The coccyx, 3-5 segments about 2-4.5 cm long, continues the curve forward (Woon JTK,
  Stringer MD, Clin Anat 2012;25(2):158-167); reference segmentations (TotalSegmentator) have no coccyx class
  and count it with the sacrum, and so do the phantoms. Ranges in ``SACRUM_RANGES``.
- Sacral apex: with the pelvis lying flat on its front, the sacrococcygeal joint lies 22 +- 14 mm above the
  superior pubic tubercles, unrelated to the pelvic incidence (248 cadaveric pelvises: Correlation between the
  distance from the pubic symphysis to the sacrum with pelvic incidence, 2019, PubMed 31109191), and the
  tubercles lie 8-13% of the inter-ASIS distance (17-34 mm) below the hip joint centres (the phantoms'
  ``build_pelvis``). So the apex lies about level with the hip joint centres whatever the sacral slope: a steep
  S1 endplate sends the upper sacrum back more than down, and the lower sacrum turns down (the sacral kyphosis
  is larger). Phantoms draw the apex's height above the centres (``sacral_apex_height_mm``) from -25 to 25 mm
  (22 mm less 25, give or take about two standard deviations of the first) and bend the sacrum to reach it.
- Auricular sacrum: the sacrum's lateral masses keep the interauricular width (109 +- 11 mm) down the whole
  auricular surface, 56 +- 5 mm tall in dry female sacra (Oman Med J 2017, PMC5799488, table 2) and 59-71 mm
  on post-mortem CT (sacral morphological variations in a Korean population, a PMCT case series, 2026), and
  only below it narrow to the apex, thinning to a plate a few millimetres thick, its pelvic surface concave
  from side to side as well as from top to bottom. Phantoms drawn with this shape
  (``make_phantom(auricular_sacrum_probability=)``) take their ranges from ``AURICULAR_SACRUM_RANGES``; the
  others keep the older shape, which narrows from S1 down.
- Faint sacral apex: sacral bone density falls from S1 down (S2's HU lower than S1's on the CT of 92 Europeans:
  Wagner D, Kamer L, Rommens PM et al., Bone mass distribution in the sacrum; the apex is among the regions
  that lose most with age on opportunistic quantitative CT of 54 sacra: Characterizing changes in sacral bone
  density), and the apex and coccyx are thin. On 3 mm CT of an elderly patient the lower half of the
  sacrum and the coccyx peak at 30-180 HU across their thickness, where phantoms' peaked at 400-640. Phantoms
  drawn with ``make_phantom(faint_sacral_apex_probability=)`` repaint the sacrum from halfway down its curve
  (``pelvis.py``'s ``FAINT_APEX_FROM``), coccyx included, with a share ``SACRAL_APEX_CONTRAST`` of its
  cortex's and marrow's contrast over muscle.
- Alar voids: in adults whose L5 body is under 100 HU, averaged CT models of 91 sacra show a large zone of
  negative HU in the lateral masses beside the foramina from S1 to S3, the lowest HU of the sacrum, while the
  bodies keep intermediate density (Wagner D, Kamer L, Sawaguchi T et al., Sacral bone mass distribution
  assessed by averaged three-dimensional CT models, J Bone Joint Surg Am 2016;98(7):584-590); reference
  segmentations keep that fatty marrow in the sacrum. Phantoms drawn with
  ``make_phantom(alar_void_probability=)`` fill an ellipsoid in each lateral mass, inside the cortex, with fat
  (``ALAR_VOID_RANGES``; ``pelvis.py``'s ``_alar_voids``); the label stays sacrum.
- Sacral canal: the canal continues L5's (interpedicular distance 24-28 mm, Zindrick 1987) down behind the
  sacral bodies, roofed by the fused laminae, and opens at the sacral hiatus: the hiatus's apex lay at S4 in 79%
  of 155 adult sacra (S3 in some), its depth there 5.4 +- 1.8 mm and the width between the sacral cornua
  12.4 +- 3.2 mm (Nastoulis E et al., Folia Morphol 2023;82(3):603-614). It holds epidural fat and, down to S2,
  the thecal sac, and reference segmentations leave it out of the sacrum. Phantoms drawn with
  ``make_phantom(sacral_canal_probability=)`` carry that canal (``SACRAL_CANAL_RANGES``: half width and half
  depth at S1 and at the hiatus, where along the sacral curve the roof ends, the roof's thickness, the
  contents' HU; ``pelvis.py``'s ``_sacral_canal``); the others keep a narrow groove down the back.
- Facet joints: the facets of T12-L2 lie 26-34 degrees from the mid-sagittal plane on average, those of L3-L5
  40-56 degrees (Masharawi Y et al., Facet orientation in the thoracolumbar spine, Spine 2004;29(16):
  1755-1763); a lumbar facet is about 15 mm tall (Panjabi MM et al., Articular facets of the human spine,
  Spine 1993;18(10):1298-1310) and the joint space 1-2.5 mm on CT. In phantoms drawn with facet joints
  (``make_phantom(facet_joint_probability=)``) each vertebra's inferior articular processes reach down
  behind and medial to the superior articular processes of the vertebra below, across a joint space drawn
  from ``FACET_JOINT_SPACE_MM`` at an angle drawn from ``FACET_ANGLE_DEG`` (keyed by the upper vertebra);
  the others keep short inferior processes that stand apart. With facet joints the laminae also reach down
  to the disc below, their lower edge ``LAMINA_EDGE_IN_DISC`` of its height below the body (textbook: the
  interlaminar window of the lumbar spine lies at the level of the disc); without, they end above the body's
  lower endplate.
- Hip joint space: adult hips show 4.2 +- 0.9 mm between femoral head and acetabulum on radiographs, 2-7 mm
  across normal hips, narrowing in osteoarthritis (Lequesne M et al., Ann Rheum Dis 2004;63(9):1145-1151), and
  3 mm CT of an elderly patient may show none. ``PELVIS_RANGES`` keeps the 1.5-3 mm the shipped model's first
  stages learnt from; ``make_phantom(hip_joint_space_mm=)`` draws from another range.
- Pelvic marrow: the cancellous bone of the sacrum, hip bones and proximal femurs is drawn as a share of the
  lumbar one (``PELVIC_MARROW_RANGES``): in adults the pelvis's marrow turns fatty earlier than the spine's, so
  at 3 mm a hip bone is often a bright cortical outline around an interior no brighter than muscle.
"""

from __future__ import annotations

import numpy as np

# level: (body width, body depth, body height, pedicle width, pedicle height, transverse pedicle angle,
#         canal half width, transverse process length, height of the disc below)
VERTEBRA_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "T11": ((38, 44), (28, 33), (21, 24), (6.5, 8.5), (15, 18), (2, 8), (8.5, 10), (8, 12), (5, 7)),
    "T12": ((40, 46), (29, 34), (22, 25), (7, 9), (15, 17), (4, 10), (9, 10.5), (8, 12), (6, 8)),
    "L1": ((42, 47), (30, 35), (23, 26), (8, 9.5), (14, 16), (9, 13), (10.5, 12), (12, 18), (7, 10)),
    "L2": ((43, 48), (31, 36), (24, 27), (8.5, 10), (14, 16), (10, 14), (10.5, 12), (15, 20), (8, 11)),
    "L3": ((45, 50), (32, 37), (24, 27), (9.5, 11.5), (14, 16), (12, 17), (11, 12.5), (18, 25), (9, 12)),
    "L4": ((46, 52), (33, 38), (24, 27), (11.5, 14), (13.5, 16), (15, 21), (11, 13), (15, 21), (9, 12)),
    "L5": ((48, 54), (33, 38), (23, 27), (15, 18), (13, 15.5), (25, 31), (12, 14), (14, 20), (8, 12)),
}
VERTEBRA_FIELDS = ("body_width", "body_depth", "body_height", "pedicle_width", "pedicle_height",
                   "pedicle_angle_deg", "canal_half_width", "transverse_process_length", "disc_below_height")
LORDOSIS_SHARE = {"L5": 0.30, "L4": 0.25, "L3": 0.20, "L2": 0.15, "L1": 0.10}

PELVIS_RANGES = {
    "inter_asis_mm": (210, 260),
    "pelvic_incidence_deg": (35, 72),
    "pelvic_tilt_deg": (0, 25),
    "lumbar_lordosis_deg": (40, 60),
    "hip_to_s1_mm": (95, 120),
    "acetabular_inclination_deg": (40, 55),
    "acetabular_anteversion_deg": (12, 25),
    "joint_space_mm": (1.5, 3.0),
    "femoral_head_diameter_mm": (40, 55),
    "neck_shaft_angle_deg": (125, 135),
    "femoral_anteversion_deg": (8, 20),
    "femoral_shaft_radius_mm": (12, 15),
    "femoral_cortex_mm": (4, 6),
    "neck_length_mm": (48, 58),
}

ILIUM_RANGES = {
    "wing_half_thickness_mm": (2.0, 7.0),
    "crest_radius_mm": (4.0, 7.0),
    "supra_acetabular_radius_mm": (12.0, 18.0),
}

PELVIC_MARROW_RANGES = {"pelvic_cancellous_share": (0.35, 1.0)}

ILIAC_FOSSA_RANGES = {"iliac_fossa_mm": (1.0, 4.0)}

SACRUM_RANGES = {
    "sacrum_length_mm": (95.0, 125.0),
    "sacral_apex_height_mm": (-25.0, 25.0),
    "coccyx_length_mm": (20.0, 45.0),
}

AURICULAR_SACRUM_RANGES = {
    "auricular_height_mm": (50.0, 72.0),
    "interauricular_half_width_mm": (46.0, 56.0),
    "sacral_apex_half_depth_mm": (3.0, 6.0),
    "sacral_sweep_deg": (0.0, 30.0),
}

SACRAL_APEX_CONTRAST = (0.05, 0.5)

ALAR_VOID_RANGES = {
    "alar_void_hu": (-100.0, 0.0),
    "alar_void_lateral_mm": (20.0, 34.0),
    "alar_void_down_mm": (20.0, 40.0),
    "alar_void_back_mm": (5.0, 15.0),
    "alar_void_radius_mm": (8.0, 14.0),
    "alar_void_half_height_mm": (12.0, 22.0),
}

SACRAL_CANAL_RANGES = {
    "sacral_canal_half_width_mm": (10.0, 15.0),
    "sacral_canal_half_depth_mm": (5.0, 8.0),
    "sacral_hiatus_half_width_mm": (4.5, 8.0),
    "sacral_hiatus_half_depth_mm": (1.8, 3.6),
    "sacral_hiatus_at": (0.6, 0.9),
    "sacral_lamina_mm": (2.0, 5.0),
    "sacral_canal_hu": (-100.0, 10.0),
}

# the facet joint below each level: its angle from the mid-sagittal plane (degrees)
FACET_ANGLE_DEG = {"T11": (30.0, 70.0), "T12": (20.0, 40.0), "L1": (20.0, 40.0), "L2": (25.0, 45.0),
                   "L3": (32.0, 52.0), "L4": (38.0, 60.0)}
FACET_JOINT_SPACE_MM = (1.0, 2.5)
LAMINA_EDGE_IN_DISC = (0.2, 0.8)  # the laminae's lower edge this share of the disc below the body (with facet joints)

# drawn from the detail generator in this order; ranges added later go last, so earlier draws stay as they were
PELVIS_DETAIL_RANGES = ILIUM_RANGES | SACRUM_RANGES | PELVIC_MARROW_RANGES | ILIAC_FOSSA_RANGES

CORTEX_MM = {"vertebra": (0.2, 0.8), "pelvis": (0.4, 1.5)}

TISSUE_HU_RANGES = {
    "air": (-1010, -990),
    "fat": (-120, -80),
    "muscle": (35, 60),
    "skin": (20, 50),
    "visceral": (-90, -40),
    "bowel": (15, 40),
    "gas": (-980, -900),
    "csf": (5, 20),
    "disc": (70, 110),
    "cartilage": (50, 90),
    "cortical": (1000, 1600),
    "cancellous": (60, 300),
    "marrow": (-50, 40),
    "kidney_cortex": (130, 250),
    "kidney_medulla": (60, 140),
    "vessel": (150, 350),
    "plaque": (400, 1000),
    "table_shell": (200, 400),
    "table_foam": (-900, -750),
}


def draw(rng: np.random.Generator, low_high: tuple[float, float], position: float | None = None) -> float:
    """A value in the range: uniform, or at ``position`` (0..1) with a little jitter of its own."""
    low, high = low_high
    if position is None:
        return float(rng.uniform(low, high))
    return float(low + (high - low) * np.clip(position + rng.normal(0, 0.15), 0, 1))


def draw_vertebra(rng: np.random.Generator, level: str, size: float) -> dict[str, float]:
    """Dimensions of one level; ``size`` (0..1) keeps a phantom's levels consistently small or large."""
    return {field: draw(rng, span, size) for field, span in zip(VERTEBRA_FIELDS, VERTEBRA_RANGES[level])}
