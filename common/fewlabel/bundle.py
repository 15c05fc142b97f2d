"""Helpers that bundle configs call: where the bundle lies, and which dataset to use."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewlabel.arguments import as_bool, as_optional, as_optional_bool
from fewlabel.errors import DataError

__all__ = [
    "INPUT_KINDS", "PROTOCOL_FILE", "REPO_BUNDLES", "Stage", "as_bool", "as_optional", "as_optional_bool",
    "bundle_root", "config_text", "end_distributed", "format_config", "inference_items", "input_kind",
    "last_batch_is_single", "load_bundle_config", "load_protocol", "rank_handlers", "resolve_datalist",
]

logger = logging.getLogger("fewlabel")

# bundles/ of the source checkout this package was installed from (editable installs)
REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _is_bundle(folder: Path, name: str) -> bool:
    meta = folder / "configs" / "metadata.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("name", folder.name) == name or folder.name == name
    except json.JSONDecodeError:
        return False


#: ``metadata.json`` ``data_type`` -> what the bundle's inference takes: whole volumes or 2D frames
VOLUME_DATA_TYPES = ("nibabel", "nifti", "dicom", "itk")
FRAME_DATA_TYPES = ("png", "jpeg", "jpg", "image", "pil", "video")
INPUT_KINDS = ("frame", "volume")


def input_kind(source: str | os.PathLike | Mapping[str, Any]) -> str:
    """What a bundle's inference takes: ``"volume"`` (CT volumes) or ``"frame"`` (2D images).

    Read from the bundle's metadata (``data_type``: ``nibabel`` / ``dicom`` -> volume, ``png`` /
    ``jpeg`` -> frame), not from its transforms: PolyCL's network takes 2D slices of the volumes it
    loads, so neither the network's ``spatial_shape`` nor the first transform's class name says it.

    Args:
        source: a bundle folder, a ``metadata.json`` path, the metadata as a mapping, or a parsed
            config holding it under ``_meta_`` (what ``monai.bundle`` and the Deploy SDK give).

    Raises:
        DataError: no metadata there, or a ``data_type`` this package does not know (named, with
            the accepted values).
    """
    if not isinstance(source, (str, os.PathLike)):  # metadata, or a parser holding it under _meta_
        meta = source.get("_meta_") or source
    else:
        path = Path(source)
        path = path / "configs" / "metadata.json" if path.is_dir() else path
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read bundle metadata {path}: {e}; pass a bundle folder with "
                            "configs/metadata.json") from e
    data_type = str(meta.get("data_type", "")).lower()
    if data_type in VOLUME_DATA_TYPES:
        return "volume"
    if data_type in FRAME_DATA_TYPES:
        return "frame"
    raise DataError(f"bundle {meta.get('name', '?')!r}: metadata data_type {data_type!r} is not one of "
                    f"{VOLUME_DATA_TYPES} (volumes) or {FRAME_DATA_TYPES} (2D frames); set it in configs/metadata.json")


def bundle_root(name: str) -> str:
    """Find bundle ``name``'s folder, so configs work from the repository root and the bundle folder.

    ``name`` is a bundle's name or the path of a bundle folder (one holding ``configs/metadata.json``,
    e.g. a bundle of your own outside this repository). A name is looked up in the current folder,
    its parent (run from ``configs/``), ``./bundles/<name>``, and the ``bundles/`` folder of the
    checkout fewlabel was installed from. Pass ``--bundle_root DIR`` to ``monai.bundle`` to use
    another copy.

    Raises:
        FileNotFoundError: no candidate holds ``configs/metadata.json`` of that bundle.
    """
    as_path = Path(name).expanduser()
    if (os.sep in str(name) or as_path.is_absolute()) and (as_path / "configs" / "metadata.json").is_file():
        return str(as_path.resolve())
    cwd = Path.cwd()
    for candidate in (cwd, cwd.parent, cwd / "bundles" / name, REPO_BUNDLES / name):
        if _is_bundle(candidate, name):
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"cannot find bundle '{name}' from {cwd}: run from the repository root or the bundle folder, "
        "or pass --bundle_root <bundle folder>."
    )


#: the file in a bundle's ``configs/`` that lists its protocol's stages
PROTOCOL_FILE = "protocol.json"
_STAGE_KEYS = {"name", "configs", "overrides", "reads", "writes"}


@dataclass(frozen=True)
class Stage:
    """One stage of a bundle's protocol: one ``monai.bundle run``.

    Attributes:
        name: the stage's output sub-folder (unique in the protocol).
        configs: config files of the bundle's ``configs/`` merged in this order.
        overrides: config values the stage always sets (the user's overrides come first, these win).
        reads / writes: files relative to the run folder (``models/pretrained.pt``,
            ``evaluate/metrics.json``) that the stage needs from an earlier stage / leaves for a later one.
    """

    name: str
    configs: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()


def load_protocol(bundle: str | os.PathLike) -> tuple[Stage, ...]:
    """The stages of a bundle's protocol, from ``configs/protocol.json`` of its folder.

    The file holds ``{"description": ..., "stages": [{"name", "configs", "overrides", "reads",
    "writes"}, ...]}``; ``fewlabel demo``, ``fewlabel seeds`` and sweeps without ``stages`` run it.

    Args:
        bundle: a bundle name or folder (see :func:`bundle_root`).

    Raises:
        FileNotFoundError: no such bundle.
        DataError: no protocol file, or one that is not valid (file and field named), e.g. a stage
            naming a config file the bundle lacks or reading a file no earlier stage writes.
    """
    root = Path(bundle_root(os.fspath(bundle)))
    path = root / "configs" / PROTOCOL_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DataError(f"bundle {root.name} has no protocol: write {path} (stages in order, see "
                        "fewlabel.bundle.load_protocol)") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    items = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: 'stages' must be a non-empty list of stages")
    stages, written = [], set()
    for i, item in enumerate(items):
        where = f"{path}: stage {i} ({item.get('name', '?') if isinstance(item, dict) else repr(item)})"
        if not isinstance(item, dict) or not {"name", "configs"} <= set(item) or set(item) - _STAGE_KEYS:
            raise DataError(f"{where}: a stage is a mapping with 'name' and 'configs' and optionally "
                            f"'overrides', 'reads', 'writes'")
        stage = Stage(str(item["name"]), tuple(item["configs"]), dict(item.get("overrides") or {}),
                      tuple(item.get("reads") or ()), tuple(item.get("writes") or ()))
        missing = [c for c in stage.configs if not (root / "configs" / c).is_file()]
        if missing:
            raise DataError(f"{where}: config files {missing} are not in {root / 'configs'}")
        unread = [r for r in stage.reads if r not in written]
        if unread:
            raise DataError(f"{where}: reads {unread}, which no earlier stage writes")
        if stage.name in {s.name for s in stages}:
            raise DataError(f"{where}: stage names must be unique")
        written.update(stage.writes)
        stages.append(stage)
    return tuple(stages)


def load_bundle_config(bundle: str, configs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The merged content of ``configs`` (file names in the bundle's ``configs/``, later ones win), with the
    bundle's ``metadata.json`` under ``_meta_``, as ``monai.bundle run`` merges them (nothing is resolved)."""
    from monai.bundle import ConfigParser

    folder = Path(bundle_root(bundle)) / "configs"
    merged = ConfigParser.load_config_files([str(folder / c) for c in configs])
    return {**merged, "_meta_": ConfigParser.load_config_file(str(folder / "metadata.json"))}


def resolve_datalist(
    dataset_dir: str | os.PathLike | None, datalist: str | os.PathLike | None = "datalist.json",
    demo: str = "nuclei", demo_kwargs: dict[str, Any] | None = None,
) -> str:
    """Return the datalist JSON a bundle should read.

    Args:
        dataset_dir: the user's dataset folder; empty or ``None`` means the demo phantoms.
        datalist: the datalist file, relative to ``dataset_dir`` unless absolute (made by
            ``fewlabel datalist DATASET SRC_DIR -o DATASET_DIR/datalist.json``).
        demo: demo phantom kind used when no dataset is given; ``"ct"``: CT volume phantoms
            (:func:`fewlabel.data.ct_slices.write_ct_demo_dataset`).
        demo_kwargs: arguments of :func:`fewlabel.data.phantoms.write_demo_dataset` (or of the CT writer).

    Raises:
        DataError: ``dataset_dir`` or the datalist does not exist (the message says how to make one).
    """
    if not dataset_dir:
        from fewlabel.data.ct_slices import write_ct_demo_dataset
        from fewlabel.data.phantoms import write_demo_dataset

        from fewlabel.data.cache import rank_zero_first

        kwargs = demo_kwargs or {}
        with rank_zero_first():  # under torchrun one process writes the demo data, the others read it
            path = write_ct_demo_dataset(**kwargs) if demo == "ct" else write_demo_dataset(demo, **kwargs)
        logger.info("no dataset_dir given: using the '%s' demo phantoms at %s", demo, path)
        return str(path)
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(
            f"dataset_dir does not exist: {root}. Point --dataset_dir at your dataset folder, or leave it out to "
            "run on the demo data."
        )
    path = Path(datalist or "datalist.json")
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        from fewlabel.data.adapters import ADAPTERS

        raise DataError(
            f"no datalist at {path}. Make one with `fewlabel datalist DATASET {root} -o {path}` "
            f"(DATASET: {', '.join(sorted(ADAPTERS))}), or pass --datalist <file>."
        )
    return str(path)


def inference_items(
    dataset_dir: str | os.PathLike | None, demo: str = "nuclei", demo_kwargs: dict[str, Any] | None = None,
    kind: str = "frame",
) -> list[dict[str, Any]]:
    """The items a bundle's ``inference.json`` runs on: the user's folder of inputs, or the demo test split.

    Args:
        dataset_dir: a folder of inputs (2D images for ``kind="frame"``, NIfTI files / DICOM series
            for ``kind="volume"``); empty or ``None`` means the ``testing`` split of the demo phantoms.
        demo: demo phantom kind (see :func:`resolve_datalist`), used only without ``dataset_dir``.
        demo_kwargs: arguments of the demo writer, used only without ``dataset_dir``.
        kind: one of :data:`INPUT_KINDS`, what the bundle's inference takes (its metadata's
            ``data_type``, see :func:`input_kind`).

    Returns:
        ``[{"image": path, ...}, ...]`` without labels: for frames every key of the demo items but
        ``label``; for volumes only ``image``.

    Raises:
        ValueError: ``kind`` is not one of :data:`INPUT_KINDS`.
        DataError: the folder holds no inputs, or the demo data cannot be written (from the readers).
    """
    from fewlabel import data

    if kind not in INPUT_KINDS:
        raise ValueError(f"inference_items: kind must be one of {INPUT_KINDS}, got {kind!r}; set it in the "
                         "bundle's inference.json (datalist#kind)")
    if dataset_dir:
        return data.list_ct_volumes(dataset_dir) if kind == "volume" else data.list_images(dataset_dir)
    path = resolve_datalist("", demo=demo, demo_kwargs=demo_kwargs)
    if kind == "volume":
        return [{"image": item["image"]} for item in data.load_datalist(path, "testing")]
    return data.load_images(path, ["testing"])


def last_batch_is_single(num_items: int, batch_size: int, world_size: int = 1) -> bool:
    """Whether the last batch a rank draws holds a single item (a training loader's ``drop_last``).

    Batch normalisation cannot train on a batch of one, so configs drop such a last batch. With
    ``world_size`` ranks, ``DistributedSampler(even_divisible=True)`` gives each rank
    ``ceil(num_items / world_size)`` items.

    Args:
        num_items: items in the (whole) training dataset, >= 0.
        batch_size: items per batch, >= 1.
        world_size: number of ranks sharing the dataset (``dist.get_world_size()``), >= 1.

    Raises:
        ValueError: ``batch_size`` or ``world_size`` below 1, or ``num_items`` below 0.
    """
    if batch_size < 1 or world_size < 1 or num_items < 0:
        raise ValueError(f"last_batch_is_single: need num_items >= 0, batch_size >= 1 and world_size >= 1, got "
                         f"{num_items}, {batch_size}, {world_size}")
    per_rank = -(-num_items // world_size)
    return per_rank % batch_size == 1


def end_distributed() -> None:
    """End a ``torchrun`` stage: wait until every rank has finished, then destroy the process group.

    A multi-GPU config's ``finalize`` step. Destroying the group while another rank is still in its last
    collective (the final validation, a checkpoint barrier) can abort that rank during teardown ("terminate
    called without an active exception"); the barrier makes every rank leave together. Does nothing when
    ``torch.distributed`` is not initialised (a single-process run of the same config).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()


def rank_handlers(handlers: Sequence[Any] | None, every_rank: Sequence[str] = (), rank: int | None = None) -> list[Any]:
    """The handlers this process attaches under ``torchrun``: all of them on rank 0, the named kinds elsewhere.

    Multi-GPU configs keep the stage's handler list as it is (MONAI's ``check_properties`` and MONAI Label
    read ``train#handlers`` as a list of components) and name the kinds every rank must run, e.g.
    ``["ValidationHandler", "LrScheduleHandler"]`` (the distributed evaluator and each rank's scheduler):
    writers and loggers (checkpoints, TensorBoard, statistics) stay on rank 0. Naming kinds instead of
    slicing the list by position keeps the choice right when a stage config adds or reorders handlers.

    Args:
        handlers: the stage's handlers (``@train#handlers``), in their order; ``None`` means none.
        every_rank: class names of the handlers that also run on ranks other than 0.
        rank: this process's rank; default ``torch.distributed``'s rank, 0 when it is not initialised.

    Returns:
        the handlers to attach, in their order: all of them on rank 0, else those whose class name is
        in ``every_rank``. A name matching none of them is logged as a warning (a typo would leave the
        other ranks without, e.g., their validation run).
    """
    handlers = list(handlers or [])
    if rank is None:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        return handlers
    kinds = {type(h).__name__ for h in handlers}
    missing = [name for name in every_rank if name not in kinds]
    if missing:
        logger.warning("rank_handlers: no handler of kind %s in this stage's handlers (%s); check every_rank in "
                       "the multi-GPU config", missing, sorted(kinds))
    return [h for h in handlers if type(h).__name__ in set(every_rank)]


def config_text(content: Any) -> str:
    """The one formatting style of every bundle config file: ``content`` as JSON text.

    Four-space indent, keys in their given order, non-ASCII characters kept, one newline at the end
    (what pre-commit's ``pretty-format-json --indent 4 --no-sort-keys --no-ensure-ascii`` writes, as the
    MONAI Model Zoo does); :func:`format_config` rewrites a file in it.
    """
    return json.dumps(content, indent=4, ensure_ascii=False) + "\n"


def format_config(path: str | os.PathLike) -> bool:
    """Rewrite the JSON config file ``path`` in the style of :func:`config_text`; True if it changed.

    ``python -c "import fewlabel.bundle as b; b.format_config('bundles/X/configs/train.json')"``

    Raises:
        DataError: the file is not valid JSON (file, line and column named).
    """
    path = Path(path)
    text = path.read_text()
    try:
        content = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    formatted = config_text(content)
    if formatted != text:
        path.write_text(formatted)
    return formatted != text
