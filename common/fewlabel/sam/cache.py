"""Cache of SAM image embeddings: the image encoder runs once per unlabelled image.

In continuous pseudo-label generation (paper, section 2.4) SAM is consulted every time an
unlabelled image is revisited, but only the prompts change between visits; the image embedding
(SAM ViT-B: ~90 M parameter encoder at 1024 x 1024) does not. :class:`EmbeddingCache` keeps it so
later visits run only the prompt encoder and mask decoder (see ``benchmarks/bench_sam_cache.py``).

Keys are SHA-256 hashes of:

- the image: either its file (absolute path + size + modification time in ns, when a path is
  given as the key source), raw content bytes (when bytes are given), or the image tensor's own
  bytes, dtype and shape (key source None);
- the image's size ``(H, W)``;
- the teacher's weights (:attr:`SamTeacher.identity`: checkpoint path + size + mtime, or a hash
  of an in-memory model's state dict), its ``model_type`` and its input size;
- the storage dtype.

So a changed image file or checkpoint never reuses a stale embedding. A path key assumes the
tensor given with it is a deterministic function of the file: do not use path keys for images
that were randomly augmented before reaching the teacher (key those by content, or not at all).

Storage: in memory (an LRU dict, bounded by ``max_memory_entries``) and optionally on disk
(``cache_dir``: one ``<key>.pt`` per image, written to a temporary file then renamed, so a
crashed or concurrent writer never leaves a partial file under a valid name). A disk entry
survives the process and is shared by every cache object pointed at the same folder.

Precision: ``dtype=torch.float16`` halves memory and disk use (SAM ViT-B: 2 MiB instead of 4 MiB
per image). Embeddings are layer-normalised values of order 1, so rounding to float16 (11
significant bits, relative error <= 2^-11 ~ 4.9e-4) changes them by ~1e-3 at most; SAM's mask
logits move by a similar relative amount and only pixels whose logit is within that of 0 can
flip in the pseudo-label (a thin boundary fringe at most). float32 storage (the default)
reproduces the uncached pseudo-labels exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from fewlabel.arguments import as_optional

__all__ = ["EmbeddingCache", "KeySource"]

#: What identifies an image in a key: its file path, its raw content bytes, or None (hash the tensor).
KeySource = str | os.PathLike | bytes | None
_KEY_FILE = re.compile(r"^[0-9a-f]{64}\.pt$")


class _Teacher(Protocol):  # what the cache needs from fewlabel.sam.SamTeacher
    model_type: str

    @property
    def identity(self) -> str: ...

    @property
    def image_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


class EmbeddingCache:
    """SAM image embeddings computed once per image and reused.

    Args:
        cache_dir: folder for the on-disk cache (created); None keeps entries in memory only.
        max_memory_entries: LRU bound on in-memory entries (None = unbounded, 0 = none kept in
            memory, which with ``cache_dir`` gives a disk-only cache).
        dtype: storage dtype, ``torch.float32`` (exact) or ``torch.float16`` (half the memory;
            see the module docstring for the precision effect). Returned embeddings are float32.
        storage_device: where in-memory entries live (default the CPU; a CUDA device avoids the
            host-to-device copy at the cost of GPU memory).

    Attributes:
        hits: lookups answered from memory or disk.
        disk_hits: the part of ``hits`` read from disk.
        misses: lookups that ran the image encoder.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike | None = None,
        max_memory_entries: int | None = None,
        dtype: torch.dtype = torch.float32,
        storage_device: str | torch.device = "cpu",
    ) -> None:
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
        if max_memory_entries is not None and max_memory_entries < 0:
            raise ValueError(f"max_memory_entries must be >= 0 or None, got {max_memory_entries}")
        cache_dir = as_optional(cache_dir, "cache_dir")
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.max_memory_entries = max_memory_entries
        self.dtype = dtype
        self.storage_device = torch.device(storage_device)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def image_identity(key_source: KeySource, image: torch.Tensor) -> str:
        """The image part of a key: file path + size + mtime, a hash of given bytes, or of the tensor."""
        if isinstance(key_source, (str, os.PathLike)):
            path = Path(key_source)
            if not path.is_file():
                raise ValueError(
                    f"cache key path {path} is not a file; pass an existing image path or None (key by content)"
                )
            st = path.stat()
            return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if isinstance(key_source, (bytes, bytearray, memoryview)):
            return "bytes:" + hashlib.sha256(bytes(key_source)).hexdigest()
        if key_source is not None:
            raise ValueError(f"a cache key source is a file path, bytes or None, got {type(key_source).__name__}")
        t = image.detach().cpu().contiguous()
        h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return "tensor:" + h.hexdigest()

    def key(self, key_source: KeySource, image: torch.Tensor, teacher: _Teacher) -> str:
        """The cache key (64 hex digits) of one ``(C, H, W)`` image for ``teacher``."""
        record = {
            "v": 1,
            "image": self.image_identity(key_source, image),
            "image_size": [int(s) for s in image.shape[-2:]],
            "teacher": teacher.identity,
            "model_type": teacher.model_type,
            "input_size": int(teacher.image_size),
            "dtype": str(self.dtype),
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    # -- storage -----------------------------------------------------------------------------
    def _remember(self, key: str, emb: torch.Tensor) -> None:
        if self.max_memory_entries == 0:
            return
        self._memory[key] = emb
        self._memory.move_to_end(key)
        if self.max_memory_entries is not None:
            while len(self._memory) > self.max_memory_entries:
                self._memory.popitem(last=False)

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{key}.pt"

    def _read_disk(self, key: str) -> torch.Tensor | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("key") != key or not isinstance(payload.get("embedding"), torch.Tensor):
                raise ValueError("entry does not match its file name")
            return payload["embedding"]
        except Exception as e:  # unreadable entry: recompute and overwrite it
            warnings.warn(f"ignoring unreadable SAM embedding cache entry {path} ({e}); recomputing it", stacklevel=3)
            return None

    def _write_disk(self, key: str, emb: torch.Tensor, meta: dict[str, Any]) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"key": key, "embedding": emb.cpu(), "meta": meta}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _lookup(self, key: str) -> torch.Tensor | None:
        emb = self._memory.get(key)
        if emb is not None:
            self._memory.move_to_end(key)
            self.hits += 1
            return emb
        emb = self._read_disk(key)
        if emb is not None:
            self.hits += 1
            self.disk_hits += 1
            emb = emb.to(self.storage_device, self.dtype)
            self._remember(key, emb)
        return emb

    # -- public ------------------------------------------------------------------------------
    def get_or_compute_batch(
        self, key_sources: Sequence[KeySource], images: torch.Tensor, teacher: _Teacher
    ) -> torch.Tensor:
        """Embeddings of a batch: cached ones looked up, the others computed in one encoder call.

        Args:
            key_sources: B key sources (see :meth:`image_identity`).
            images: ``(B, C, H, W)`` images as :meth:`SamTeacher.embed` takes them.
            teacher: the :class:`fewlabel.sam.SamTeacher` that computes missing embeddings.

        Returns:
            ``(B, C', g, g)`` float32 embeddings on the teacher's device.
        """
        if images.ndim != 4 or len(key_sources) != images.shape[0]:
            raise ValueError(
                f"expected B key sources for (B, C, H, W) images, got {len(key_sources)} and {tuple(images.shape)}"
            )
        keys = [self.key(src, images[i], teacher) for i, src in enumerate(key_sources)]
        found: dict[int, torch.Tensor] = {}
        todo: list[int] = []
        for i, k in enumerate(keys):
            emb = self._lookup(k)
            if emb is None:
                todo.append(i)
            else:
                found[i] = emb
        if todo:
            self.misses += len(todo)
            fresh = teacher.embed(images[todo])
            for j, i in enumerate(todo):
                stored = fresh[j].detach().to(self.storage_device, self.dtype).clone()
                self._write_disk(keys[i], stored, {"model_type": teacher.model_type, "teacher": teacher.identity})
                self._remember(keys[i], stored)
                found[i] = stored
        return torch.stack([found[i].to(teacher.device, torch.float32) for i in range(len(keys))])

    def get_or_compute(
        self, key_source: KeySource, image: torch.Tensor, teacher: _Teacher
    ) -> torch.Tensor:
        """Embedding of one image, from the cache or computed (and stored).

        Args:
            key_source: the image's file path, content bytes, or None to key by ``image``'s content.
            image: ``(C, H, W)`` image as :meth:`SamTeacher.embed` takes it (without batch axis).
            teacher: the :class:`fewlabel.sam.SamTeacher`.

        Returns:
            ``(C', g, g)`` float32 embedding on the teacher's device.
        """
        if image.ndim != 3:
            raise ValueError(f"expected one (C, H, W) image, got shape {tuple(image.shape)}")
        return self.get_or_compute_batch([key_source], image[None], teacher)[0]

    def clear(self, disk: bool = True) -> None:
        """Forget every entry and reset the counters; ``disk=True`` also deletes the ``<key>.pt``
        files (and leftover temporary files) in ``cache_dir``, nothing else."""
        self._memory.clear()
        self.hits = self.disk_hits = self.misses = 0
        if disk and self.cache_dir is not None and self.cache_dir.is_dir():
            for f in self.cache_dir.iterdir():
                if f.is_file() and (_KEY_FILE.match(f.name) or (f.name.startswith(".") and f.name.endswith(".tmp"))):
                    f.unlink(missing_ok=True)

    def __len__(self) -> int:
        """Number of in-memory entries."""
        return len(self._memory)

    def __contains__(self, key: str) -> bool:
        path = self._disk_path(key)
        return key in self._memory or (path is not None and path.is_file())

    def stats(self) -> dict[str, int]:
        """``{"hits", "disk_hits", "misses", "memory_entries"}``."""
        return {"hits": self.hits, "disk_hits": self.disk_hits, "misses": self.misses, "memory_entries": len(self)}

    def __repr__(self) -> str:
        where = f"cache_dir={str(self.cache_dir)!r}" if self.cache_dir is not None else "memory only"
        return (
            f"EmbeddingCache({where}, max_memory_entries={self.max_memory_entries}, dtype={self.dtype}, "
            f"{self.stats()})"
        )
