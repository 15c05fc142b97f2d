"""The ``label_server`` section of a bundle's ``configs/protocol.json``: which stages ``/train/<bundle>`` runs.

Read by the app (:mod:`fewlabel.label_server.app`, which writes :data:`PLAN_FILE`) and by the training that runs
them (:mod:`fewlabel.label_server.training`); plain Python, no MONAI Label needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewlabel.bundle import PROTOCOL_FILE, input_kind, load_protocol
from fewlabel.errors import DataError

__all__ = ["SECTION", "PLAN_FILE", "ServerStage", "ServerProtocol", "load_server_protocol"]

SECTION = "label_server"  # the section of configs/protocol.json
PLAN_FILE = "label_server.json"  # written by prepare_app into <app>/model/<bundle>/configs/
_USES = ("images", "labels")


@dataclass(frozen=True)
class ServerStage:
    """One stage the server runs: a ``monai.bundle run`` of ``configs`` with ``overrides``.

    ``uses``: ``"images"`` (no labels; reused while the image set is unchanged) or ``"labels"``;
    ``min_labels``: left out below this many saved labels; ``weights``: the file (relative to the run
    folder) it leaves as the served weights; ``writes``: files it writes (never linked from the app).
    """

    name: str
    configs: tuple[str, ...]
    uses: str
    overrides: dict[str, Any] = field(default_factory=dict)
    min_labels: int = 0
    weights: str | None = None
    writes: tuple[str, ...] = ()
    unlabelled: bool = False


@dataclass(frozen=True)
class ServerProtocol:
    """A bundle's ``label_server`` section, its protocol stages resolved."""

    bundle: str
    stages: tuple[ServerStage, ...]
    min_labels: int
    overrides: dict[str, Any]
    paths: dict[str, str]
    kind: str  # "frame" / "volume": which datastore images the bundle takes
    description: str = ""

    def planned(self, labels: int) -> list[ServerStage]:
        """The stages run with ``labels`` saved labels."""
        return [s for s in self.stages if labels >= s.min_labels]


def load_server_protocol(bundle: str | os.PathLike) -> ServerProtocol | None:
    """The ``label_server`` section of ``bundle``'s ``configs/protocol.json``, or ``None`` without one.

    Raises:
        DataError: a section that is not valid (the file and the stage named): an unknown protocol
            stage, ``uses`` not ``images`` / ``labels``, no stage naming the served ``weights``.
    """
    root = Path(bundle)
    path = root / "configs" / PROTOCOL_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text()).get(SECTION)
    if raw is None:
        return None
    where = f"{path}: '{SECTION}'"
    known = {s.name: s for s in load_protocol(root)}
    stages = []
    for i, item in enumerate(raw.get("stages") or []):
        at = f"{where} stage {i}"
        if "stage" in item:
            if item["stage"] not in known:
                raise DataError(f"{at}: no stage {item['stage']!r} in the protocol ({', '.join(known)})")
            base = known[item["stage"]]
            name, configs, writes = base.name, base.configs, base.writes
            overrides = {**base.overrides, **(item.get("overrides") or {})}
        elif {"name", "configs"} <= set(item):
            name, configs = str(item["name"]), tuple(item["configs"])
            writes, overrides = tuple(item.get("writes") or ()), dict(item.get("overrides") or {})
            missing = [c for c in configs if not (root / "configs" / c).is_file()]
            if missing:
                raise DataError(f"{at}: config files {missing} are not in {root / 'configs'}")
        else:
            raise DataError(f"{at}: give 'stage' (a stage of the protocol) or 'name' and 'configs'")
        if item.get("uses") not in _USES:
            raise DataError(f"{at} ({name}): 'uses' must be one of {list(_USES)}, not {item.get('uses')!r}")
        stages.append(ServerStage(name, configs, item["uses"], overrides, int(item.get("min_labels", 0)),
                                  item.get("weights"), tuple(writes), bool(item.get("unlabelled", False))))
    if not stages:
        raise DataError(f"{where}: 'stages' must list the stages the server runs")
    if not any(s.weights for s in stages):
        raise DataError(f"{where}: no stage names the served 'weights' (e.g. \"weights\": \"models/model.pt\")")
    return ServerProtocol(root.name, tuple(stages), int(raw.get("min_labels", 0)), dict(raw.get("overrides") or {}),
                          dict(raw.get("paths") or {}), input_kind(root), str(raw.get("description", "")))
