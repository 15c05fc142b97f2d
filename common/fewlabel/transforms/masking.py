"""Batched, on-device mask corruption: the pre-training input of SurgicalSemiSeg.

SurgicalSemiSeg (its Section 2.1) pre-trains a CNN encoder-decoder as a *mask-corrupted
denoising autoencoder*: the network sees ``x' = t(x) = x * m + (1 - m) * delta`` and is trained
to reconstruct the clean ``x``. The transform ``t`` has four parameters:

- ``ratio`` (rho, in [0, 0.9]): the fraction of masked pixels (``m = 0``). rho = 0 is a plain
  autoencoder.
- ``patch_size`` (N, in [8, 256]): side of a square patch or diameter of a circular one.
- ``shape`` (s): ``"square"`` or ``"circle"``.
- ``fill`` (c, the colour ``delta``): ``"black"`` (0), ``"component"`` (one random colour per
  mask component, i.e. per patch) or ``"pixel"`` (a random colour for every masked pixel).
  Random colours are uniform in [0, 1] per channel, so they assume images scaled to [0, 1].

Unlike MAE, patches are not on a grid: each patch's centre is a uniformly random pixel of the
image, so patches overlap and may be cut by the image border.

**Exact ratio.** The masked fraction of *every* image is ``T / (H W)`` with
``T = round(rho H W)`` pixels, i.e. rho to within half a pixel, whatever N, H and W are (also
for N that does not divide H or W, for a single patch larger than the ratio allows, and for
images smaller than a patch). The method:

1. Draw candidate patches ``k = 0, 1, 2, ...`` per image (enough to cover rho in expectation
   with a margin, ``coverage ~ 1 - exp(-k a / HW)`` with ``a`` the patch's mean area inside the
   image; more rounds are drawn if some image is still short).
2. Build an *order map*: every pixel gets the index of the first patch that covers it
   (``scatter_reduce("amin")`` of patch indices over each patch's pixel footprint; the work is
   the total patch area drawn, a small multiple of ``H W`` whatever N is, and the footprint is a
   square or an exact digital disk alike).
3. A histogram of the order map gives, per image, the patch ``k*`` at which coverage crosses
   ``T``: all pixels of order ``< k*`` are masked, and of the pixels that patch ``k*`` adds,
   only the ``T - covered(< k*)`` closest to its centre (Chebyshev distance for squares,
   Euclidean for circles, ties in raster order) - so the trimmed last patch is a smaller
   concentric square or disk instead of a band, and an image smaller than a patch gets a
   centred blob.

The order map also gives the ``"component"`` fill its colours: each masked pixel takes the
colour of the first patch covering it, so overlapping patches keep one colour each.
All steps are tensor operations on the batch's device (a loop over a few vectorised chunks or
rounds, never over pixels or patches).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import MAX_SEED, convert_to_dst_type

from fewlabel.random_state import generator_state, set_generator_state

__all__ = ["SHAPES", "FILLS", "mask_ratio", "MaskCorruption", "MaskCorruptiond"]

SHAPES = ("square", "circle")
FILLS = ("black", "component", "pixel")

RATIO_RANGE = (0.0, 0.9)
PATCH_RANGE = (8, 256)
# index elements scattered per vectorised chunk (int64: 8 bytes each, a few such tensors live at once)
_CHUNK_ELEMENTS = 1 << 22
# rounds of patch draws before giving up: each round draws enough patches to reach the target in
# expectation with a margin, so real inputs need 1-2 rounds; the bound only stops a broken generator
_MAX_ROUNDS = 100


def mask_ratio(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of masked pixels (``m = 0``) of each mask of a batch.

    Args:
        masks: ``(B, 1, H, W)`` (or ``(B, C, H, W)``, ``(B, H, W)``) with 1 = kept, 0 = masked.

    Returns:
        ``(B,)`` float tensor in [0, 1], on the masks' device.
    """
    if masks.ndim < 2:
        raise ValueError(f"expected a batch of masks (B, ...), got shape {tuple(masks.shape)}")
    return (masks.flatten(1) == 0).float().mean(dim=1)


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)):
        raise ValueError(f"ratio must be a number in [0, 0.9], got {ratio!r}")
    ratio = float(ratio)
    if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:  # also rejects NaN
        raise ValueError(f"ratio must be in [0, 0.9] (the paper's rho), got {ratio}")
    return ratio


def _check_patch_size(patch_size: int) -> int:
    integral = isinstance(patch_size, (int, np.integer)) and not isinstance(patch_size, bool)
    if not integral and isinstance(patch_size, (float, np.floating)):
        integral = math.isfinite(patch_size) and float(patch_size).is_integer()
    if not integral:
        raise ValueError(f"patch_size must be an integer in [8, 256], got {patch_size!r}")
    n = int(patch_size)
    if not PATCH_RANGE[0] <= n <= PATCH_RANGE[1]:
        raise ValueError(f"patch_size must be in [8, 256] (the paper's N), got {n}")
    return n


def _footprint(n: int, shape: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Offsets of a patch's pixels from its top-left corner.

    Returns ``(grid, keep)``: ``grid`` ``(N,)`` the 1D offsets 0..N-1 (the square is their outer
    product); ``keep`` ``(F,)`` flat indices into the ``N x N`` grid of the disk's pixels (None
    for squares). A disk of diameter N holds the pixels whose centres lie within N/2 of the
    patch centre ``((N-1)/2, (N-1)/2)``; its bounding box is the full ``N x N``.
    """
    grid = torch.arange(n, device=device)
    if shape == "square":
        return grid, None
    d = 2 * grid - (n - 1)  # doubled offsets from the centre: integers
    inside = (d[:, None] ** 2 + d[None, :] ** 2) <= n * n
    return grid, inside.flatten().nonzero().flatten()


def _mean_clipped_length(length: int, n: int) -> float:
    """Mean number of a patch's rows (or columns) inside an image side of ``length`` pixels,
    the patch's centre uniform over the side's pixels."""
    c = np.arange(length)
    start = c - n // 2
    return float(np.mean(np.minimum(start + n, length) - np.maximum(start, 0)))


class MaskCorruption(Randomizable, Transform):
    """Array transform: mask-corrupt a batch, ``x -> (x * m + (1 - m) * delta, m)``.

    Args:
        ratio: rho, the fraction of masked pixels of every image, in [0, 0.9]. Met to within
            half a pixel on every image (see the module docstring for the method).
        patch_size: N, square side or circle diameter in pixels, in [8, 256].
        shape: ``"square"`` or ``"circle"``.
        fill: ``"black"`` (delta = 0), ``"component"`` (one uniform [0, 1] RGB colour per patch)
            or ``"pixel"`` (a uniform [0, 1] colour per masked pixel and channel). Random colours
            assume images scaled to [0, 1].
        generator: a ``torch.Generator`` for reproducible masks; random numbers are drawn on the
            generator's device and moved to the batch's device. ``None`` (default) uses torch's
            global RNG on the batch's device. See also :meth:`set_seed`.

    Call on a float tensor ``(B, C, H, W)`` (or one image ``(C, H, W)``), any device; returns
    ``(corrupted, masks)``: ``corrupted`` of the input's shape, dtype and device, ``masks``
    ``(B, 1, H, W)`` (``(1, H, W)`` for one image) float32 with 1 = kept, 0 = masked, one mask
    per image shared by all its channels. Unmasked pixels are returned bit for bit.
    With ``ratio = 0`` the image comes back unchanged (a copy) with an all-ones mask.

    In a MONAI ``DataLoader`` each worker's copy is re-seeded through :meth:`set_random_state`,
    so workers draw different masks.
    """

    def __init__(
        self,
        ratio: float = 0.4,
        patch_size: int = 64,
        shape: str = "square",
        fill: str = "black",
        generator: torch.Generator | None = None,
    ) -> None:
        self.ratio = _check_ratio(ratio)
        self.patch_size = _check_patch_size(patch_size)
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.shape = shape
        self.fill = fill
        self.generator = generator

    # ----------------------------------------------------------------------------- randomness
    def set_seed(self, seed: int) -> MaskCorruption:
        """Use a fresh generator seeded with ``seed`` (on the current generator's device, else the CPU)."""
        device = self.generator.device if self.generator is not None else "cpu"
        self.generator = torch.Generator(device=device).manual_seed(int(seed) % (2**63))
        return self

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MaskCorruption:
        """MONAI's seeding hook (``set_determinism``, DataLoader workers): seeds :attr:`generator`.

        ``seed`` seeds it directly, ``state`` draws a seed from the NumPy state; with neither the
        transform goes back to torch's global RNG.
        """
        super().set_random_state(seed, state)
        if seed is not None:
            self.set_seed(int(seed))
        elif state is not None:
            self.set_seed(int(self.R.randint(MAX_SEED)))
        else:
            self.generator = None
        return self

    def randomize(self, data=None) -> None:
        """Nothing to pre-draw: all random numbers are drawn inside :meth:`__call__` from :attr:`generator`."""

    def state_dict(self) -> dict[str, Any]:
        """The random state, to resume a run (:class:`fewlabel.handlers.TrainingState`): :attr:`generator`
        (None when the transform draws from torch's global RNG) and its own NumPy state ``R`` once seeded."""
        return {"generator": generator_state(self.generator),
                "R": generator_state(self.R) if "R" in vars(self) else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; a generator saved where this transform has none (or the reverse) is a
        ValueError, as the two runs were configured differently."""
        if (state["generator"] is None) != (self.generator is None):
            raise ValueError("MaskCorruption: the saved state has "
                             f"{'no' if state['generator'] is None else 'a'} generator, this transform "
                             f"{'has none' if self.generator is None else 'has one'}")
        if self.generator is not None:
            set_generator_state(self.generator, state["generator"], "MaskCorruption.generator")
        if state.get("R") is not None:
            self.R = np.random.RandomState()
            set_generator_state(self.R, state["R"], "MaskCorruption.R")

    def _rng_device(self, device: torch.device) -> torch.device:
        return self.generator.device if self.generator is not None else device

    def _randint(self, high: int, size: tuple[int, ...], device: torch.device) -> torch.Tensor:
        out = torch.randint(0, high, size, generator=self.generator, device=self._rng_device(device))
        return out.to(device)

    def _rand(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        rd = self._rng_device(device)
        rdtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32  # halves: drawn in float32
        return torch.rand(size, generator=self.generator, device=rd, dtype=rdtype).to(device, dtype)

    # ------------------------------------------------------------------------------- masking
    def _scatter_patches(
        self, order: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor, first: int, h: int, w: int,
        grid: torch.Tensor, keep: torch.Tensor | None,
    ) -> None:
        """Write patch indices ``first + k`` into ``order`` (``(B, H*W + 1)``, last column a dump)
        with ``amin``, for patches with top-left corners ``ty, tx`` ``(B, K)``."""
        b, k_total = ty.shape
        n = grid.numel()
        hw = h * w
        per_patch = n * n if keep is None else keep.numel()
        chunk = max(1, _CHUNK_ELEMENTS // max(1, b * per_patch))
        for s in range(0, k_total, chunk):
            y = ty[:, s : s + chunk, None] + grid  # (B, k, N)
            x = tx[:, s : s + chunk, None] + grid
            # out-of-image rows/columns push the flat index to >= H*W, then into the dump column
            rows = torch.where((y >= 0) & (y < h), y * w, hw)
            cols = torch.where((x >= 0) & (x < w), x, hw)
            flat = (rows[..., :, None] + cols[..., None, :]).flatten(2)  # (B, k, N*N)
            if keep is not None:
                flat = flat.index_select(2, keep)
            flat = flat.clamp_max_(hw)
            kk = flat.shape[1]
            idx = torch.arange(first + s, first + s + kk, device=order.device)
            src = idx.repeat_interleave(flat.shape[2])[None].expand(b, -1)  # (B, k*F), stride 0 over B
            order.scatter_reduce_(1, flat.reshape(b, -1), src, reduce="amin", include_self=True)

    def _masks(self, b: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked, order)``: ``masked`` ``(B, H*W)`` bool with exactly ``round(rho H W)`` True
        per row; ``order`` ``(B, H*W)`` int64, the first patch covering each pixel."""
        n = self.patch_size
        hw = h * w
        target = int(round(self.ratio * hw))
        grid, keep = _footprint(n, self.shape, device)
        area_in = _mean_clipped_length(h, n) * _mean_clipped_length(w, n)
        if keep is not None:
            area_in *= keep.numel() / (n * n)
        sentinel = torch.iinfo(torch.int64).max
        order = torch.full((b, hw + 1), sentinel, dtype=torch.int64, device=device)
        # expected uncovered fraction after k patches ~ exp(-k a / HW): draw with a margin, then top up
        uncovered_goal = max((hw - target) / hw, 1e-6)
        uncovered = 1.0
        drawn = 0
        tys, txs = [], []
        for _ in range(_MAX_ROUNDS):
            k_new = math.ceil(1.3 * math.log(uncovered / uncovered_goal) * hw / area_in) + 2
            cy = self._randint(h, (b, k_new), device)
            cx = self._randint(w, (b, k_new), device)
            ty, tx = cy - n // 2, cx - n // 2
            self._scatter_patches(order, ty, tx, drawn, h, w, grid, keep)
            tys.append(ty)
            txs.append(tx)
            drawn += k_new
            covered = (order[:, :hw] != sentinel).sum(dim=1)
            if int(covered.min()) >= target:
                break
            uncovered = 1.0 - int(covered.min()) / hw
        else:
            raise RuntimeError(
                f"MaskCorruption: {_MAX_ROUNDS} rounds ({drawn} patches of size {n}, {self.shape}) did not mask "
                f"{target} of the {h}x{w} pixels (ratio {self.ratio}) of every image: the random generator repeats "
                "its draws. Pass a torch.Generator that is not re-seeded between draws (or none)."
            )
        order.clamp_max_(drawn)  # uncovered pixels -> index `drawn`
        order[:, hw] = drawn  # the dump column received out-of-image pixels: make it "uncovered" too
        ty, tx = torch.cat(tys, 1), torch.cat(txs, 1)

        # the patch k* at which coverage reaches the target, per image
        counts = torch.zeros(b, drawn + 1, dtype=torch.int64, device=device)
        counts.scatter_add_(1, order[:, :hw], torch.ones((), dtype=torch.int64, device=device).expand(b, hw))
        cum = counts.cumsum(1)
        k_star = (cum < target).sum(dim=1)  # (B,), <= drawn - 1 when target > 0
        before = torch.where(k_star > 0, cum.gather(1, (k_star - 1).clamp_min(0)[:, None])[:, 0], 0)
        need = target - before  # pixels still to take from patch k*
        masked = order < k_star[:, None]  # (B, HW + 1)
        if target > 0:
            # from patch k*, the `need` pixels closest to its centre (ties in raster order), worked
            # out in its N x N window only
            k_idx = k_star[:, None]
            yy = ty.gather(1, k_idx) + grid  # (B, N)
            xx = tx.gather(1, k_idx) + grid
            rows = torch.where((yy >= 0) & (yy < h), yy * w, hw)
            cols = torch.where((xx >= 0) & (xx < w), xx, hw)
            flat = (rows[:, :, None] + cols[:, None, :]).flatten(1).clamp_max_(hw)  # (B, N*N), raster order
            local = order.gather(1, flat)
            d = (2 * grid - (n - 1)).abs()
            if self.shape == "square":
                key, n_keys = torch.maximum(d[:, None], d[None, :]).flatten(), n
            else:
                key, n_keys = (d[:, None] ** 2 + d[None, :] ** 2).flatten(), n * n + 1
            last = local == k_idx  # never the dump column: it holds `drawn` > k*
            key = torch.where(last, key[None], n_keys)  # other pixels -> an overflow bin
            hist = torch.zeros(b, n_keys + 1, dtype=torch.int64, device=device)
            hist.scatter_add_(1, key, torch.ones((), dtype=torch.int64, device=device).expand_as(key))
            cum_key = hist[:, :n_keys].cumsum(1)
            level = (cum_key < need[:, None]).sum(dim=1, keepdim=True)  # key level where `need` is crossed
            below = torch.where(level > 0, cum_key.gather(1, (level - 1).clamp_min(0)), 0)
            at_level = key == level
            take = (key < level) | (at_level & (at_level.long().cumsum(1) <= need[:, None] - below))
            masked.scatter_(1, flat, take | (local < k_idx))  # window pixels: new | already masked
        return masked[:, :hw], order[:, :hw]

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(img)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"expected an image (C, H, W) or a batch (B, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point image scaled to [0, 1], got dtype {x.dtype}")
        b, c, h, w = x.shape
        device = x.device
        if self.ratio == 0.0 or b == 0 or h * w == 0:
            masks = torch.ones(b, 1, h, w, dtype=torch.float32, device=device)
            out = x.clone()
            return (out[0], masks[0]) if single else (out, masks)

        masked, order = self._masks(b, h, w, device)
        keep = ~masked.reshape(b, 1, h, w)
        if self.fill == "black":
            delta = torch.zeros((), dtype=x.dtype, device=device)
        elif self.fill == "pixel":
            delta = self._rand((b, c, h, w), x.dtype, device)
        else:  # one colour per patch: index the colour table with the order map
            n_colours = int(order.max()) + 1
            colours = self._rand((b, n_colours, c), x.dtype, device)
            delta = colours.gather(1, order[:, :, None].expand(b, h * w, c))  # (B, HW, C); order < n_colours
            delta = delta.permute(0, 2, 1).reshape(b, c, h, w)
        out = torch.where(keep, x, delta)
        masks = keep.to(torch.float32)
        return (out[0], masks[0]) if single else (out, masks)


class MaskCorruptiond(Randomizable, MapTransform):
    """Dictionary twin of :class:`MaskCorruption` for per-sample pipelines.

    For each key, the ``(C, H, W)`` image is replaced by its corrupted version, the clean image
    is kept under ``clean_key`` (default ``"<key>_clean"``, the reconstruction target) and the
    ``(1, H, W)`` mask (1 = kept) under ``mask_key``. MetaTensor inputs keep their metadata.

    Args:
        keys: the image key(s); with several keys give ``mask_key`` / ``clean_key`` as None to get
            ``"<key>_mask"`` / ``"<key>_clean"`` per key.
        mask_key: where the mask goes (default ``"mask"``; None -> ``"<key>_mask"``).
        clean_key: where the clean image goes (None -> ``"<key>_clean"``).
        ratio, patch_size, shape, fill, generator: see :class:`MaskCorruption`.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        mask_key: str | None = "mask",
        clean_key: str | None = None,
        ratio: float = 0.4,
        patch_size: int = 64,
        shape: str = "square",
        fill: str = "black",
        generator: torch.Generator | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) > 1 and (mask_key is not None or clean_key is not None):
            raise ValueError("with several keys, mask_key and clean_key must be None (one per key)")
        self.mask_key = mask_key
        self.clean_key = clean_key
        self.corrupt = MaskCorruption(ratio, patch_size, shape, fill, generator)

    def set_seed(self, seed: int) -> MaskCorruptiond:
        """Seed the underlying :class:`MaskCorruption`'s generator."""
        self.corrupt.set_seed(seed)
        return self

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MaskCorruptiond:
        super().set_random_state(seed, state)
        self.corrupt.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        """Nothing to pre-draw (see :meth:`MaskCorruption.randomize`)."""

    def state_dict(self) -> dict[str, Any]:
        """The random state of the underlying :class:`MaskCorruption` (see :meth:`MaskCorruption.state_dict`)."""
        return {"corrupt": self.corrupt.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.corrupt.load_state_dict(state["corrupt"])

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            img_t = torch.as_tensor(img)
            if img_t.ndim != 3:
                raise ValueError(f"'{key}' must be one channel-first image (C, H, W), got shape {tuple(img_t.shape)}")
            plain = img_t.as_tensor() if hasattr(img_t, "as_tensor") else img_t
            corrupted, mask = self.corrupt(plain)
            d[self.clean_key or f"{key}_clean"] = img
            d[key] = convert_to_dst_type(corrupted, img)[0]
            d[self.mask_key or f"{key}_mask"] = convert_to_dst_type(mask, img, dtype=torch.float32)[0]
        return d
