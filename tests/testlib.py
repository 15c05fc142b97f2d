"""Helpers the tests share (imported as ``from testlib import ...``; ``tests/`` is on pytest's path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the repository root and its bundle folders
REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a PNG at ``path`` (parents created); returns the path."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def read_png(path: Path) -> np.ndarray:
    """Read an image file into a NumPy array."""
    from PIL import Image

    return np.asarray(Image.open(path))


def corrupt_variants(data: bytes, seed: int = 0, count: int = 12) -> list[tuple[str, bytes]]:
    """Damaged copies of a valid file's bytes, for fuzz tests of the loaders.

    Returns ``count`` ``(name, bytes)`` pairs, the same for the same ``seed``: truncations (at the
    header, a quarter, half and one byte short), single and burst bit flips, and a mangled header
    (its first 64 bytes replaced by random bytes, or by zeros).
    """
    rng = np.random.default_rng(seed)
    n = len(data)
    out: list[tuple[str, bytes]] = [("empty", b"")]
    for cut in (min(16, n - 1), n // 4, n // 2, n - 1):
        out.append((f"truncated_at_{cut}", data[:max(cut, 0)]))
    head = min(64, n)
    out.append(("header_random", rng.integers(0, 256, head, dtype=np.uint8).tobytes() + data[head:]))
    out.append(("header_zeros", bytes(head) + data[head:]))
    while len(out) < count:
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        flips = 1 if len(out) % 2 else 32
        where = rng.integers(0, n, flips)
        arr[where] ^= (1 << rng.integers(0, 8, flips)).astype(np.uint8)
        out.append((f"bitflip_{flips}_{len(out)}", arr.tobytes()))
    return out[:count]


def smoke_overrides(bundle: Path) -> dict:
    """The size overrides of a bundle's ``smoke.json`` that inference needs (image size, channels, encoder)."""
    import json

    smoke = json.loads((bundle / "configs" / "smoke.json").read_text())
    return {k: v for k, v in smoke.items() if k in ("image_size", "channels", "encoder_name")}


def inference_checkpoint(bundle: Path, path: Path, **extra) -> Path:
    """Random weights of ``bundle``'s inference network (smoke sizes) saved as a checkpoint at ``path``."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({**smoke_overrides(bundle), **extra})
    torch.save({"model": parser.get_parsed_content("network_def", instantiate=True).state_dict()}, path)
    return path


def truncate_file(path: Path) -> Path:
    """Cut a file to half its bytes (a download or copy that stopped midway); returns the path."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def bundle_with_weights(name: str, dest: Path) -> Path:
    """A copy of the repository's bundle ``name`` at ``dest`` with random (seeded) weights in ``models/model.pt``."""
    import os
    import shutil

    import torch
    from monai.bundle import ConfigParser

    shutil.copytree(REPO / "bundles" / name, dest, ignore=shutil.ignore_patterns("sweeps", "docs", "eval", "models"))
    (dest / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(os.fspath(dest / "configs" / "inference.json"))
    parser["bundle_root"] = os.fspath(dest)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    return dest
