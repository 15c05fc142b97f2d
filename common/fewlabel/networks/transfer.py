"""Encoder-only pre-training and transfer: which weights are "the encoder", freezing the rest,
and copying a pre-trained checkpoint (all of it, or its encoder) into a network.

A network names its encoder by state-dict key prefixes: ``network.encoder_prefixes`` if it
defines them (e.g. :class:`fewlabel.networks.vit_unet.ViTUNet`), else ``("encoder.",)`` for
networks with an ``encoder`` attribute (all segmentation_models_pytorch models).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fewlabel.arguments import as_bool
from fewlabel.errors import CheckpointError

__all__ = ["encoder_prefixes", "encoder_state_dict", "freeze_non_encoder", "trainable_parameters", "load_pretrained",
           "load_state_file", "init_from_pretrained", "prepare_pretraining", "head_prefixes", "load_encoder_weights"]

logger = logging.getLogger("fewlabel.networks")


def encoder_prefixes(network: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of ``network``'s encoder."""
    prefixes = getattr(network, "encoder_prefixes", None)
    if prefixes:
        return tuple(prefixes)
    if hasattr(network, "encoder"):
        return ("encoder.",)
    raise ValueError(f"{type(network).__name__} has neither `encoder_prefixes` nor an `encoder` attribute")


def head_prefixes(network: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of ``network``'s final layer (the one that maps features to outputs)."""
    prefixes = getattr(network, "head_prefixes", None)
    if prefixes:
        return tuple(prefixes)
    if hasattr(network, "segmentation_head"):
        return ("segmentation_head.",)
    raise ValueError(f"{type(network).__name__} has neither `head_prefixes` nor a `segmentation_head` attribute")


def encoder_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of ``network.state_dict()`` that belong to its encoder."""
    prefixes = encoder_prefixes(network)
    return {k: v for k, v in network.state_dict().items() if k.startswith(prefixes)}


def freeze_non_encoder(network: nn.Module) -> nn.Module:
    """Freeze every parameter outside the encoder (MedSASS encoder-only pre-training, "E").

    The decoder and head keep their (seeded) initial weights; BatchNorm statistics outside the
    encoder still follow the data in training mode. Returns ``network`` for use in configs.
    """
    prefixes = encoder_prefixes(network)
    n_frozen = 0
    for name, p in network.named_parameters():
        if not name.startswith(prefixes):
            p.requires_grad_(False)
            n_frozen += p.numel()
    logger.info("encoder-only training: froze %d parameters outside %s", n_frozen, prefixes)
    return network


def trainable_parameters(network: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters an optimizer should get (those with ``requires_grad``)."""
    return (p for p in network.parameters() if p.requires_grad)


def read_weights_file(path: str | os.PathLike, what: str = "weights file", hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a clear error.

    Only tensors and plain Python values load (a pickled payload is refused, never run).

    Raises:
        CheckpointError: the file cannot be read (truncated, corrupt, not a PyTorch file, or holding
            objects ``weights_only`` refuses); the message names ``what``, the file and ``hint``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickled objects weights_only refuses, ...
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(
            f"cannot read {what} {os.fspath(path)}: the file is corrupt, truncated or not a PyTorch weights file "
            f"({type(e).__name__}: {detail}). {hint}".strip()
        ) from e


def write_weights_file(obj: Any, path: str | os.PathLike, checksums: bool = True) -> Path:
    """``torch.save(obj, path)`` atomically: written under a per-process temporary name, then renamed, so a
    reader (another rank, a crash in the middle) never sees a half-written file. Parents are created.

    ``checksums=False`` leaves out the CRC-32 of each record in the file's zip archive (computing it is
    most of the time of saving a large state on the CPU). ``torch.load`` does not check these
    checksums, so the file loads to the same values; tools that unzip it would find them missing. For
    files only this package reads back (the training state), not for weights handed to others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _crc32(checksums):
            torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _crc32(enabled: bool) -> Iterator[None]:
    """Within: ``torch.save`` computes the records' CRC-32 or not (``torch.utils.serialization.config``)."""
    try:
        from torch.utils.serialization import config
    except ImportError:  # a torch without the setting: it always computes them
        config = None
    save = getattr(config, "save", None)
    if enabled or not hasattr(save, "compute_crc32"):
        yield
        return
    before = save.compute_crc32
    save.compute_crc32 = False
    try:
        yield
    finally:
        save.compute_crc32 = before


def load_state_file(path: str | os.PathLike, hint: str = "") -> dict[str, torch.Tensor]:
    """Read a weights file safely (``weights_only=True``, on CPU) into a flat state dict.

    Accepts a plain state dict or a MONAI checkpoint dict ``{"model": state_dict, ...}``.

    Raises:
        CheckpointError: the file is missing or unreadable (the message names it, plus ``hint``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}. {hint}".strip())
    state = read_weights_file(path, "weights file", hint)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors. {hint}".strip())
    return state


def load_pretrained(
    network: nn.Module, checkpoint: str | os.PathLike | dict[str, torch.Tensor], part: str = "all",
) -> nn.Module:
    """Copy pre-trained weights into ``network``: all of them, only the encoder's, or all but the final layer.

    Args:
        network: the network to fill (modified in place and returned, for configs).
        checkpoint: a weights file (see :func:`load_state_file`) or a state dict.
        part: ``"all"`` (end-to-end pre-training, E+D), ``"encoder"`` (encoder-only, E: the
            decoder keeps its fresh initialisation) or ``"all_but_head"`` (every weight but the final
            layer, which starts fresh: e.g. a 3-channel reconstruction head replaced by K classes).

    Raises:
        CheckpointError: the checkpoint lacks some of the requested weights or their shapes differ
            (the message names the file and the first mismatching keys).
    """
    if part not in ("all", "encoder", "all_but_head"):
        raise ValueError(f"part must be 'all', 'encoder' or 'all_but_head', got '{part}'")
    source = str(checkpoint) if not isinstance(checkpoint, dict) else "the given state dict"
    state = checkpoint if isinstance(checkpoint, dict) else load_state_file(checkpoint)
    target = network.state_dict()
    if part == "encoder":
        prefixes = encoder_prefixes(network)
        wanted = encoder_state_dict(network)
        in_scope = [k for k in state if k.startswith(prefixes)]
    elif part == "all_but_head":
        head = head_prefixes(network)
        wanted = {k: v for k, v in target.items() if not k.startswith(head)}
        in_scope = [k for k in state if not k.startswith(head)]
    else:
        wanted, in_scope = target, list(state)
    missing = [k for k in wanted if k not in state]
    wrong = [k for k in wanted if k in state and state[k].shape != target[k].shape]
    unexpected = [k for k in in_scope if k not in wanted]
    if missing or wrong or unexpected:
        raise CheckpointError(
            f"{source} does not fit this network ({part} weights): {len(missing)} missing keys "
            f"{missing[:3]}, {len(wrong)} with other shapes {wrong[:3]}, {len(unexpected)} unexpected "
            f"{unexpected[:3]}. Was it trained with another network_def (architecture, encoder, channels)?"
        )
    network.load_state_dict({**target, **{k: state[k] for k in wanted}})
    logger.info("loaded %d %s tensors from %s", len(wanted), part, source)
    return network


#: classifier layers of published backbones (torchvision ``fc``, timm ``head`` / ``classifier``), not part of an encoder
_CLASSIFIER_KEYS = ("fc.", "classifier.", "head.", "last_linear.")


def load_encoder_weights(network: nn.Module, checkpoint: str | os.PathLike) -> nn.Module:
    """Load encoder weights a user has on disk (e.g. ImageNet weights of a ResNet-34) into ``network``.

    Two layouts are accepted: a network's own state dict (keys under its encoder prefix, e.g.
    ``encoder.layer1.0.conv1.weight``), or a bare backbone state dict as torchvision / timm publish
    them (``conv1.weight``, ``layer1.0.conv1.weight``, ..., plus a classifier ``fc.*`` that is
    dropped). Every encoder weight must be present with its shape, and nothing else may be (a
    ResNet-34 file given to a ResNet-18 encoder is an error, not a partial load).

    Raises:
        CheckpointError: missing file, or weights that do not fit the encoder (the message names the file).
    """
    hint = "Pass encoder_weights_path=null to start from random encoder weights."
    state = load_state_file(checkpoint, hint)
    prefixes = encoder_prefixes(network)
    if not any(k.startswith(prefixes) for k in state):  # a bare backbone: put it under the encoder prefix
        wanted = encoder_state_dict(network)
        prefix = prefixes[0]
        state = {prefix + k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_KEYS)}
        if not any(k in wanted for k in state):
            raise CheckpointError(
                f"{checkpoint} holds no weights of this encoder (neither '{prefix}*' keys nor the encoder's own "
                f"key names). Is it the state dict of the same backbone (encoder_name)? {hint}"
            )
    try:
        return load_pretrained(network, {k: v for k, v in state.items() if k.startswith(prefixes)}, part="encoder")
    except CheckpointError as e:
        raise CheckpointError(f"{checkpoint}: {e} {hint}") from e


def init_from_pretrained(
    network: nn.Module, checkpoint: str | os.PathLike | None, mode: str = "end_to_end", policy: str | bool = "auto",
    hint: str = "Run the bundle's pretrain config first, or set from_pretrained=false.",
) -> nn.Module:
    """Initialise a network for fine-tuning from a self-supervised checkpoint, as configs ask.

    Args:
        network: freshly built network.
        checkpoint: the pre-trained weights file.
        mode: what to transfer: ``"end_to_end"`` (E+D: every weight is copied), ``"encoder"`` (E:
            only the encoder, the decoder starts fresh) or ``"all_but_head"`` (everything but the
            final layer, which is re-initialised for the new number of outputs).
        policy: ``True`` (the file must exist), ``False`` (random initialisation), or ``"auto"``
            (use the file when it exists, else warn and start from random weights).
        hint: what the error for a missing file tells the user to do.
    """
    parts = {"end_to_end": "all", "encoder": "encoder", "all_but_head": "all_but_head"}
    if mode not in parts:
        raise ValueError(f"transfer mode must be one of {sorted(parts)}, got '{mode}'")
    if not (isinstance(policy, str) and policy.strip().lower() == "auto"):
        policy = as_bool(policy, "from_pretrained (or the config's other from_* key)")
    else:
        policy = "auto"
    if policy is False or not checkpoint:
        logger.info("fine-tuning from random initialisation")
        return network
    if policy == "auto" and not os.path.isfile(checkpoint):
        logger.warning("no pre-trained weights at %s: fine-tuning from random initialisation", checkpoint)
        return network
    if not os.path.isfile(checkpoint):
        raise CheckpointError(
            f"weights file not found: {checkpoint}. {hint}"
        )
    load_pretrained(network, checkpoint, part=parts[mode])
    logger.info("fine-tuning from %s (%s weights)", checkpoint, parts[mode])
    return network


def prepare_pretraining(network: nn.Module, mode: str = "end_to_end") -> nn.Module:
    """Set a network up for MedSASS pre-training: ``"end_to_end"`` trains all of it (E+D),
    ``"encoder"`` freezes everything outside the encoder (E)."""
    if mode == "encoder":
        return freeze_non_encoder(network)
    if mode != "end_to_end":
        raise ValueError(f"pretrain mode must be 'end_to_end' or 'encoder', got '{mode}'")
    return network
