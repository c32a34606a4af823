"""Digital phantom cohorts: synthetic CTs with organ labels, the built-in default data.

Real patient scans cannot ship with globalmask, so this package builds a seeded cohort of CT-like
volumes with label maps, laid out as an nnU-Net v2 raw dataset. The phantoms are built to test the
claim behind global binary masks: **anatomy (shape and position) is consistent across subjects while
intensity is not reliable across scanners**.

Three kinds:

``headneck``
    skull with brain, cerebellum and ventricles, face with orbits, sinuses, nasal cavity, teeth and
    hard palate, neck with cervical spine, airway, larynx, hyoid and thyroid. Labels: brainstem,
    spinal_cord, parotid_left, parotid_right, mandible.
``thorax``
    chest wall with subcutaneous fat, ribs, costal cartilage, sternum, clavicles, scapulae,
    thoracic spine, lungs with vessels and bronchi, a contrast-filled heart (four chambers in a
    myocardium), aorta with arch branches, pulmonary artery, SVC, trachea, oesophagus, diaphragm,
    liver and stomach. Labels: heart, lung_left, lung_right, aorta, spinal_cord; with
    ``chambers=True`` the heart is split into heart_lv, heart_rv, heart_la and heart_ra.
``thorax-varied``
    the ``thorax`` subjects of the same seed (identical labels and affines) scanned as real cohorts
    are: a contrast phase (unenhanced, venous, arterial: blood pool 35-400 HU at 120 kVp), tube
    voltage (80-140 kVp), dose and reconstruction kernel drawn per case from published CT figures
    (:class:`.thorax.Acquisition`) instead of step 3's linear scanner; air and soft tissue stay calibrated.

How a case is made (everything seeded by ``np.random.default_rng([seed, index, kind_code])``, so
case *i* is the same whatever the cohort size):

1. **Geometry**: a positive-diagonal RAS+ affine with per-case voxel spacing (in-plane and slice
   drawn separately) and origin. Spacing scales with ``64 / shape`` so the field of view in
   millimetres, and therefore the anatomy, does not depend on the grid size.
2. **Subject**: every voxel centre is mapped to *anatomy coordinates* (millimetres, RAS+: +x toward
   the patient's right, +y anterior, +z superior) by a random pose (rotation about each axis), an
   overall size scale, a shift within the field of view and a smooth random displacement field of a
   few millimetres. Organs are analytic shapes (ellipsoids, tubes along poly-lines, elliptic
   cylinders, planes) evaluated at those coordinates, each with its own small size and position
   jitter, so spacing changes sampling, never anatomy.
3. **Scanner**: the HU image is blurred (Gaussian, sigma in [0, 1] voxel), put through a linear
   transform (scale 0.85-1.15, offset +-60 HU), given Gaussian noise (sigma 10-40 HU), clipped to
   [-1024, 3071] and stored as int16. Air stays below -700 HU, soft tissue and fat above -300 HU and
   bone above 250 HU for every case, so a -300 HU threshold GBM is always meaningful.

Labels are mutually exclusive (later structures take precedence) and stored as uint8.

Modules: :mod:`.case` (one case, label maps, argument checks), :mod:`.cohort` (the dataset folder),
:mod:`.scene` (grid, anatomy coordinates, painting, scanner), :mod:`.shapes` (draws and signed
distances), :mod:`.headneck` and :mod:`.thorax` (one builder per anatomy, one function per part).
"""

from __future__ import annotations

from .case import KINDS, MIN_SIDE, PHANTOM_VERSION, make_phantom_case, phantom_case_id, phantom_labels
from .cohort import make_phantom_dataset
from .headneck import HEADNECK_LABELS
from .thorax import THORAX_CHAMBER_LABELS, THORAX_LABELS

__all__ = [
    "HEADNECK_LABELS",
    "KINDS",
    "MIN_SIDE",
    "PHANTOM_VERSION",
    "THORAX_CHAMBER_LABELS",
    "THORAX_LABELS",
    "make_phantom_case",
    "make_phantom_dataset",
    "phantom_case_id",
    "phantom_labels",
]
