"""Deterministic procedural demo phantoms (image + ground-truth mask) and demo datasets.

No machine this project runs on can download the real datasets, so every bundle can run on
phantoms instead: small synthetic images that look like the modality (so a network trained on
them learns something plausible) and come with an exact ground truth.

Each kind of phantom is a generator registered with :func:`register_phantom`; new modalities
slot in by registering another generator, without editing this package::

    @register_phantom("fundus", num_classes=2, class_names=("background", "optic_disc"), modality="fundus")
    def _fundus(rng, style_rng, size):
        ...
        return image, mask  # (H, W, 3) uint8 RGB, (H, W) uint8 class indices

:func:`make_phantom` draws one image; :func:`write_demo_dataset` writes a whole dataset (PNG
images, PNG label maps and a MONAI datalist with patient-level splits) into the cache folder.

Layout: :mod:`.registry` (the registry, :func:`make_phantom` and its argument checks),
:mod:`.common` (drawing helpers the generators share), one module per modality, each registering
its kind when imported -- :mod:`.microscopy` ``nuclei`` (fluorescence microscopy),
:mod:`.dermoscopy` ``dermoscopy``, :mod:`.xray` ``xray`` (chest radiograph lungs), all binary,
:mod:`.laparoscopy` ``laparoscopy`` (8 classes: the merged CholecSeg8k classes of a laparoscopic
cholecystectomy frame, see :data:`LAPAROSCOPY_CLASSES`), :mod:`.liver_landmarks`
``liver_landmarks`` (4 classes: background, silhouette, ridge, falciform ligament drawn as thin
curves on a laparoscopic liver frame, see :data:`fewlabel.data.landmarks.LANDMARK_CLASSES`) and
:mod:`.polyp` ``polyp`` (binary: a colonoscopy frame with folds, vessels, glints and always one or
two polyps) -- then :mod:`.dataset` (:func:`write_demo_dataset`) and :mod:`.ct` (the 3D CT phantom
and its NIfTI / DICOM writers, also re-exported by :mod:`fewlabel.data.ct`).

Randomness comes only from ``np.random.default_rng``: the same ``(kind, seed, size)`` always
gives byte-identical arrays.
"""

from fewlabel.data.phantoms.registry import (
    PHANTOM_VERSION,
    PHANTOMS,
    PhantomGenerator,
    make_phantom,
    phantom_info,
    register_phantom,
)

# the modality modules register their kinds when imported, in this order (the order of PHANTOMS)
from fewlabel.data.phantoms import microscopy, dermoscopy, xray, laparoscopy, liver_landmarks, polyp
from fewlabel.data.phantoms.laparoscopy import LAPAROSCOPY_CLASSES
from fewlabel.data.phantoms.dataset import write_demo_dataset
from fewlabel.data.phantoms.ct import CTPhantom, make_ct_phantom, write_ct_phantom, write_ct_phantom_dicom

__all__ = [
    "PHANTOMS",
    "PHANTOM_VERSION",
    "PhantomGenerator",
    "register_phantom",
    "phantom_info",
    "make_phantom",
    "write_demo_dataset",
    "LAPAROSCOPY_CLASSES",
    "CTPhantom",
    "make_ct_phantom",
    "write_ct_phantom",
    "write_ct_phantom_dicom",
]
