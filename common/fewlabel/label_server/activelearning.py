"""Which image to label next: uncertainty scores and strategies for every bundle (MONAI Label env only).

This module imports MONAI Label 0.8.5; the app's ``main.py`` (written by
:func:`fewlabel.label_server.app.prepare_app`) puts :class:`ActiveLearningApp` among its bases.
For every served bundle ``<b>`` the server offers:

- ``POST /activelearning/uncertainty_<b>``: the unlabelled image the bundle is least sure about
  (:class:`UncertaintyStrategy`), beside MONAI Label's own ``random`` and ``first``;
- ``POST /scoring/uncertainty_<b>``: MONAI Label's scoring endpoint running :class:`EntropyScoring`
  over the unlabelled images (as a task process, like ``/train``).

The score is the mean per-pixel entropy of the bundle's own prediction
(:func:`fewlabel.label_server.scores.prediction_entropy`): the bundle's pre-processing, inferer
and served weights, up to the logits, read with the activation its post-processing applies. It is
the one measure that fits all five networks: none has dropout layers (MONAI Label's epistemic
scoring would add dropout the weights were never trained with), and test-time augmentation would
cost several inferences per image (a CT volume slice by slice) for the same ranking purpose.

Scores are kept in the datastore (``datastore_v2.json``, each image's info under
``fewlabel_uncertainty``) with a fingerprint of the weights and the inference config they were
computed with: they survive a restart, and a score of other weights is recomputed when asked
for. :func:`rescore` recomputes them after a training run.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import name_to_device

from fewlabel.bundle import input_kind
from fewlabel.label_server.scores import (
    SCORE_KEY,
    activation_of,
    fingerprint,
    prediction_entropy,
    reads,
    score_record,
    stored_score,
)

__all__ = ["EntropyScoring", "UncertaintyStrategy", "ActiveLearningApp", "rescore", "strategy_name",
           "UNCERTAINTY_PREFIX"]

logger = logging.getLogger(__name__)

UNCERTAINTY_PREFIX = "uncertainty_"


def strategy_name(bundle: str) -> str:
    """The name of ``bundle``'s uncertainty strategy and scoring method: ``uncertainty_<bundle>``."""
    return f"{UNCERTAINTY_PREFIX}{bundle}"


class EntropyScoring(ScoringMethod):
    """MONAI Label scoring method: the mean entropy of ``bundle``'s prediction for each unlabelled image.

    Args:
        bundle: the bundle's name (its key in the scores).
        infer_task: the app's inference task of the bundle (its pre-processing, inferer and
            weights are used, so the score is of what ``/infer`` serves).

    A request (``POST /scoring/uncertainty_<b>`` body, or :meth:`__call__`'s ``request``) may hold
    ``images`` (ids; default every unlabelled image), ``force`` (recompute current scores too) and
    ``device``. Only images without a score of the current weights are computed.
    """

    method = "entropy"

    def __init__(self, bundle: str, infer_task: BundleInferTask) -> None:
        super().__init__(f"Mean per-pixel entropy of {bundle}'s prediction (higher: less sure)")
        self.bundle = bundle
        self.infer_task = infer_task
        self.kind = input_kind(infer_task.bundle_path)  # frames or volumes: the images it scores
        self._activation: str | None = None  # read from the post-processing at the first image

    def fingerprint(self) -> str:
        """Of the served weights and the inference config (:func:`~fewlabel.label_server.scores.fingerprint`)."""
        return fingerprint(self.infer_task.get_path(), self.infer_task.bundle_config_path)

    def score(self, image_path: str, device: str) -> float:
        """The entropy of the bundle's prediction for one image file, in [0, 1]."""
        task = self.infer_task
        data = copy.deepcopy(task.config())
        data.update({"image": image_path, "image_path": image_path, "device": device, "logging": "error"})
        data = task.run_pre_transforms(data, task.pre_transforms(data))
        data = task.run_inferer(data, device=device)
        logits = data[task.output_label_key]
        if self._activation is None:
            self._activation = activation_of(task.post_transforms(data), int(logits.shape[0]))
        return prediction_entropy(logits, self._activation)

    def candidates(self, images: Sequence[str], datastore: Datastore) -> list[str]:
        """The ``images`` of the file type the bundle reads (frames or volumes)."""
        return [i for i in images if reads(self.kind, datastore.get_image_uri(i) or "")]

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        images = self.candidates(list(request.get("images") or datastore.get_unlabeled_images()), datastore)
        current = self.fingerprint()
        todo = [i for i in images if request.get("force")
                or stored_score(datastore.get_image_info(i), self.bundle, current) is None]
        device = name_to_device(request.get("device"))
        records, failed = {}, {}
        for image_id in todo:
            try:
                score = self.score(datastore.get_image_uri(image_id), device)
            except Exception as e:  # noqa: BLE001 (one unreadable image must not stop the others)
                failed[image_id] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                logger.warning(f"{strategy_name(self.bundle)}: {image_id} cannot be scored: {failed[image_id]}")
                continue
            records[image_id] = score_record(score, self.method, current, time.time())
            logger.info(f"{strategy_name(self.bundle)}: {image_id} => {score:.4f}")
        if records:
            if hasattr(datastore, "update_scores"):
                datastore.update_scores(self.bundle, records)
            else:  # another datastore: MONAI Label's own update, one image at a time
                for image_id, record in records.items():
                    scores = dict(datastore.get_image_info(image_id).get(SCORE_KEY) or {})
                    datastore.update_image_info(image_id, {SCORE_KEY: {**scores, self.bundle: record}})
        summary = {"bundle": self.bundle, "method": self.method, "total": len(images), "scored": len(records),
                   "skipped": len(images) - len(todo), "failed": failed, "weights": current,
                   "latency": round(time.time() - start, 3)}
        logger.info(f"{strategy_name(self.bundle)}: {summary}")
        return summary


class UncertaintyStrategy(Strategy):
    """MONAI Label strategy: the unlabelled image ``scoring``'s bundle is least sure about.

    Images without a score of the served weights are scored first (once; the scores are kept).
    An image this strategy gave out within the last ``hold_seconds`` comes after the others, so
    that two annotators asking at once get different images; among the rest the highest score wins
    (ties: the smaller id).
    """

    def __init__(self, scoring: EntropyScoring, hold_seconds: float = 600.0) -> None:
        super().__init__(f"Unlabelled image {scoring.bundle} is least sure about (entropy of its prediction)")
        self.scoring = scoring
        self.hold_seconds = float(hold_seconds)

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        if hasattr(datastore, "reload"):
            datastore.reload()  # scores a /train or /scoring task wrote
        images = self.scoring.candidates(datastore.get_unlabeled_images(request.get("label_tag"),
                                                                        request.get("labels")), datastore)
        if not images:
            return None
        self.scoring({"images": images, "device": request.get("device")}, datastore)
        current = self.scoring.fingerprint()
        now, name = time.time(), request.get("strategy", strategy_name(self.scoring.bundle))
        ranked = []
        for image_id in images:
            info = datastore.get_image_info(image_id)
            score = stored_score(info, self.scoring.bundle, current)
            served = (info.get("strategy") or {}).get(name, {}).get("ts", 0)
            held = now - float(served or 0) < self.hold_seconds
            ranked.append((held, -(score if score is not None else -1.0), image_id, score))
        held, _, image_id, score = min(ranked)
        logger.info(f"{name}: selected {image_id} (score {score}; {'all recently given out' if held else 'fresh'})")
        return {"id": image_id, "score": score, "bundle": self.scoring.bundle, "method": self.scoring.method}


class ActiveLearningApp:
    """Mixin for a ``MONAILabelApp`` serving bundles: an uncertainty strategy and scoring method per bundle.

    Put it before the stock app among the bases. The bundles are the app's ``models``
    (``{name: folder}``, as the stock ``monaibundle`` app has them) served by a ``BundleInferTask``.
    """

    def uncertainty_scoring(self) -> dict[str, EntropyScoring]:
        """``{bundle: EntropyScoring}`` for every served bundle (built once)."""
        if getattr(self, "_fewlabel_scoring", None) is None:
            models: Sequence[str] = list(getattr(self, "models", {}) or {})
            self._fewlabel_scoring = {n: EntropyScoring(n, self._infers[n]) for n in models
                                      if isinstance(self._infers.get(n), BundleInferTask)}
        return self._fewlabel_scoring

    def init_strategies(self) -> dict[str, Strategy]:
        strategies = dict(super().init_strategies())  # random, first
        for bundle, scoring in self.uncertainty_scoring().items():
            strategies[strategy_name(bundle)] = UncertaintyStrategy(scoring)
        logger.info(f"Active Learning Strategies:: {list(strategies)}")
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        methods = dict(super().init_scoring_methods())
        methods.update({strategy_name(b): s for b, s in self.uncertainty_scoring().items()})
        return methods

    def train(self, request: Mapping[str, Any]) -> Any:
        """MONAI Label's ``train`` (what a ``/train`` task process runs), then :func:`rescore` of the
        bundle with its new weights; a scoring failure is logged and does not fail the training."""
        result = super().train(request)
        bundle = request.get("model")
        if bundle in self.uncertainty_scoring():
            try:
                logger.info(f"rescoring after training: {rescore(self, bundle, request.get('device'))}")
            except Exception as e:  # noqa: BLE001 (the training itself succeeded)
                logger.warning(f"{strategy_name(bundle)}: rescoring after training failed ({e}); the scores are "
                               "computed when the next image is asked for")
        return result


def rescore(app: Any, bundle: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Recompute the uncertainty scores of ``bundle`` (default every bundle) for the unlabelled images.

    Call it at the end of a training task, in the task's process (``app`` is the MONAI Label app
    instance the task runs in): the weights changed, so every unlabelled image is scored again with
    them and the scores replace the old ones in the datastore. Scores of unchanged weights are kept,
    so a second call costs nothing. :meth:`ActiveLearningApp.train` calls it after every training
    that goes through the app's ``train`` (MONAI Label's task process does).

    Returns:
        ``{scoring method: summary}`` (images scored, skipped, time).
    """
    names = [strategy_name(bundle)] if bundle else [n for n in app.info().get("scoring", {})
                                                    if n.startswith(UNCERTAINTY_PREFIX)]
    request = {"device": device} if device else {}
    return {n: app.scoring({"method": n, **request}) for n in names}
