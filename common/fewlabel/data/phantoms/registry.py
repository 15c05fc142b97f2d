"""The registry of 2D phantom generators: :func:`register_phantom`, :func:`phantom_info`, :func:`make_phantom`.

A generator is called as ``fn(rng, style_rng, (H, W))`` and returns ``(image, mask)``; see
:func:`register_phantom` for the contract and :mod:`fewlabel.data.phantoms` for the registered kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "PHANTOMS",
    "PHANTOM_VERSION",
    "PhantomGenerator",
    "PhantomPair",
    "register_phantom",
    "phantom_info",
    "make_phantom",
    "check_kind",
    "check_size",
    "check_seed",
]

#: Bumped whenever a generator's output changes, so cached demo datasets are regenerated.
PHANTOM_VERSION = 1

#: Signature of a phantom generator: ``(rng, style_rng, (H, W)) -> (image, mask)``. ``rng`` draws
#: the content of this one image, ``style_rng`` the appearance shared by a patient's images.
PhantomGenerator = Callable[[np.random.Generator, np.random.Generator, tuple[int, int]], tuple[np.ndarray, np.ndarray]]

#: What a generator returns: ``(image, mask)``, ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 class indices.
PhantomPair = tuple[np.ndarray, np.ndarray]

#: Registered generators, by kind.
PHANTOMS: dict[str, PhantomGenerator] = {}
_INFO: dict[str, dict[str, Any]] = {}

_MIN_SIZE = 32


def register_phantom(
    name: str, num_classes: int, class_names: tuple[str, ...], modality: str
) -> Callable[[PhantomGenerator], PhantomGenerator]:
    """Decorator registering a phantom generator under ``name`` in :data:`PHANTOMS`.

    The decorated function is called as ``fn(rng, style_rng, (H, W))`` with two
    ``np.random.Generator``: ``rng`` for the content of the image, ``style_rng`` for the
    appearance that all images of one patient share (stain, skin tone, exposure...). It must
    use no other source of randomness and return ``(image, mask)``: ``image`` of shape
    ``(H, W, 3)``, dtype uint8 (RGB); ``mask`` of shape ``(H, W)``, dtype uint8, with values in
    ``[0, num_classes - 1]``.

    Args:
        name: the kind, as passed to :func:`make_phantom`.
        num_classes: number of classes of the mask, background included.
        class_names: one name per class, index 0 first (usually ``"background"``).
        modality: free text, e.g. ``"microscopy"``, ``"dermoscopy"``, ``"xray"``.

    Raises:
        ValueError: ``name`` is already registered, or ``class_names`` does not have
            ``num_classes`` entries.
    """
    if name in PHANTOMS:
        raise ValueError(f"A phantom named '{name}' is already registered.")
    class_names = tuple(class_names)
    if num_classes < 2 or len(class_names) != num_classes:
        raise ValueError(
            f"Phantom '{name}': num_classes={num_classes} needs as many class_names (got {class_names})."
        )

    def decorator(fn: PhantomGenerator) -> PhantomGenerator:
        PHANTOMS[name] = fn
        _INFO[name] = {"num_classes": int(num_classes), "class_names": class_names, "modality": str(modality)}
        return fn

    return decorator


def check_kind(kind: str) -> None:
    """Raise a ValueError listing the known kinds unless ``kind`` is registered in :data:`PHANTOMS`."""
    if kind not in PHANTOMS:
        raise ValueError(f"Unknown phantom kind '{kind}'; known kinds: {', '.join(sorted(PHANTOMS))}.")


def phantom_info(kind: str) -> dict[str, Any]:
    """Metadata of a registered phantom kind.

    Returns:
        ``{"num_classes": int, "class_names": tuple[str, ...], "modality": str}``.

    Raises:
        ValueError: unknown ``kind`` (the message lists the known kinds).
    """
    check_kind(kind)
    info = _INFO[kind]
    return {"num_classes": info["num_classes"], "class_names": tuple(info["class_names"]), "modality": info["modality"]}


def make_phantom(
    kind: str, seed: int, size: tuple[int, int] = (224, 224), *, style_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom image and its ground-truth mask.

    Args:
        kind: a key of :data:`PHANTOMS` (``"nuclei"``, ``"dermoscopy"``, ``"xray"``, ...).
        seed: non-negative integer; the same ``(kind, seed, size, style_seed)`` gives
            byte-identical arrays, another seed another image.
        size: ``(H, W)`` in pixels, each at least 32. Structures scale with the image size.
        style_seed: seed of the appearance shared by one patient's images (staining, skin tone,
            exposure, anatomy proportions); defaults to ``seed``.

    Returns:
        ``(image, mask)``: ``image`` of shape ``(H, W, 3)``, dtype uint8, RGB in [0, 255];
        ``mask`` of shape ``(H, W)``, dtype uint8, class indices in ``[0, num_classes - 1]``
        (see :func:`phantom_info`).

    Raises:
        ValueError: unknown ``kind``, negative seed or invalid ``size``.
    """
    check_kind(kind)
    size = check_size(size)
    seed = check_seed(seed, "seed")
    style_seed = seed if style_seed is None else check_seed(style_seed, "style_seed")
    rng = np.random.default_rng([seed, 0])
    style_rng = np.random.default_rng([style_seed, 1])
    image, mask = PHANTOMS[kind](rng, style_rng, size)
    num_classes = _INFO[kind]["num_classes"]
    if (
        image.shape != (*size, 3)
        or image.dtype != np.uint8
        or mask.shape != size
        or mask.dtype != np.uint8
        or int(mask.max(initial=0)) >= num_classes
    ):
        raise RuntimeError(
            f"Phantom generator '{kind}' returned image {image.shape} {image.dtype} and mask {mask.shape} "
            f"{mask.dtype}; expected ({size[0]}, {size[1]}, 3) uint8 and ({size[0]}, {size[1]}) uint8 < {num_classes}."
        )
    return image, mask


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as ``(H, W)`` ints; a ValueError unless it is two numbers, each at least 32."""
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if h < _MIN_SIZE or w < _MIN_SIZE:
        raise ValueError(f"size must be at least ({_MIN_SIZE}, {_MIN_SIZE}), got {size!r}")
    return h, w


def check_seed(seed: int, name: str) -> int:
    """``seed`` as an int; a ValueError naming the argument ``name`` unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)
