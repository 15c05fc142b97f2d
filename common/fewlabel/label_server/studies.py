"""fewlabel's MONAI Label app parts that keep the server inside its studies folder (MONAI Label env only).

This module imports MONAI Label 0.8.5: it runs in the server's environment, where the app's
``main.py`` (written by :func:`fewlabel.label_server.app.prepare_app`) combines
:class:`StudiesOnlyApp` with the stock ``monaibundle`` app.

- :class:`StudiesDatastore`: MONAI Label's ``LocalDatastore`` that accepts only image ids and label
  tags naming entries of the studies folder (:func:`~fewlabel.label_server.guard.name_problem`),
  files with the datastore's extensions, and paths whose real location (symbolic links followed)
  is inside the studies folder; anything else is refused with an ``HTTPException`` (4xx) that says why.
  It also keeps the uncertainty scores (:meth:`StudiesDatastore.update_scores`) written by other
  processes (``/train`` and ``/scoring`` tasks) without losing what the server wrote meanwhile.
- :class:`StudiesOnlyApp`: the app's datastore is a :class:`StudiesDatastore`, and ``infer`` resolves
  an image id through it only (the stock ``infer`` takes any id that exists as a path as that path).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import tempfile
from typing import Any

from fastapi import HTTPException
from filelock import FileLock
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.datastore import DefaultLabelTag

from fewlabel.label_server.guard import (
    TRUSTED_IMAGE_PATH,
    bundle_labels,
    label_values,
    label_values_problem,
    name_problem,
)
from fewlabel.label_server.scores import SCORE_KEY

__all__ = ["StudiesDatastore", "StudiesOnlyApp"]

logger = logging.getLogger(__name__)


_PIL_TYPES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_NIFTI_TYPES = (".nii", ".nii.gz")


def spatial_shape(path: str) -> tuple[int, ...] | None:
    """The spatial shape of an image file, (H, W) for frames, the voxel grid for NIfTI; ``None`` for
    types it does not read (``.nrrd``, ``.svs``...).

    Raises:
        ValueError: the file is not a readable image of its type.
    """
    name = os.path.basename(path).lower()
    try:
        if name.endswith(_PIL_TYPES):
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                return (im.size[1], im.size[0])
        if name.endswith(_NIFTI_TYPES):
            import nibabel as nib

            return tuple(int(s) for s in nib.load(path).shape[:3])
    except Exception as e:  # noqa: BLE001 (any reader failure means: not an image)
        raise ValueError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    return None


class StudiesDatastore(LocalDatastore):
    """A ``LocalDatastore`` whose every id, tag and file stays inside the studies folder.

    Uploads are checked as well: an image must be readable as its file type, and a label must be
    readable, have its image's spatial size (frames: height x width; volumes: the voxel grid) and
    hold only the label values of one served bundle (:attr:`allowed_labels`).
    """

    #: ``{bundle: {value: name}}`` of the served bundles, set by :class:`StudiesOnlyApp`; empty: not checked
    allowed_labels: dict[str, dict[int, str]] = {}

    def _root(self) -> str:
        return os.path.realpath(self._datastore_path)

    def _inside(self, path: str) -> bool:
        root = self._root()
        return os.path.realpath(path).startswith(root + os.sep)

    @staticmethod
    def _check(value: Any, what: str) -> str:
        problem = name_problem(value, what)
        if problem:
            raise HTTPException(status_code=400, detail=problem)
        return value

    def _check_inside(self, path: str, what: str) -> str:
        if not self._inside(path):
            raise HTTPException(status_code=403, detail=f"{what} leads outside the studies folder "
                                f"{self._root()} (a symbolic link?); it is not served")
        return path

    def _check_ext(self, filename: str, what: str) -> str:
        name = os.path.basename(filename).lower()
        if not any(fnmatch.fnmatch(name, p.lower()) for p in self._extensions):
            allowed = ", ".join(p.replace("*", "") for p in self._extensions)
            raise HTTPException(status_code=415, detail=f"{what} {os.path.basename(filename)!r} is not one of the "
                                f"studies' file types ({allowed})")
        return filename

    @staticmethod
    def _readable(path: str, what: str) -> tuple[int, ...] | None:
        try:
            return spatial_shape(path)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=f"{what} is not a readable image of its type "
                                f"({os.path.basename(path)}): {e}") from e

    # ------------------------------------------------------------------ listing
    def _list_files(self, path, patterns):
        """The stock listing, without entries whose real location is outside the studies folder."""
        files = super()._list_files(path, patterns)
        return {k: v for k, v in files.items() if self._inside(os.path.join(path, v))}

    def datalist(self, full_path=True) -> list[dict[str, Any]]:
        """The training pairs, only those whose image and label are inside the studies folder."""
        return [d for d in super().datalist(full_path) if not full_path or all(self._inside(p) for p in d.values())]

    # ------------------------------------------------------------------ lookups
    def get_image_uri(self, image_id: str) -> str:
        self._check(image_id, "image id")
        uri = super().get_image_uri(image_id)
        return self._check_inside(uri, f"image {image_id!r}") if uri else uri

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        self._check(label_id, "label id")
        self._check(label_tag, "label tag")
        uri = super().get_label_uri(label_id, label_tag)
        return self._check_inside(uri, f"label {label_id!r} ({label_tag})") if uri else uri

    # ------------------------------------------------------------------ changes
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        self._check_ext(image_filename, "image file")
        if image_id:
            self._check(image_id, "image id")
        else:
            self._check(self._to_id(os.path.basename(image_filename))[0], "image name")
        image_id = image_id or self._to_id(os.path.basename(image_filename))[0]
        _, ext = self._to_id(os.path.basename(image_filename))
        dest = os.path.join(self._datastore.image_path(), self._filename(image_id, ext))
        self._check_inside(os.path.dirname(dest) + os.sep + "x", f"the images folder of {image_id!r}")
        self._check_inside(dest, f"image {image_id!r}")
        self._readable(image_filename, f"image {image_id!r}")
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        self._check(image_id, "image id")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"no image {image_id!r} in the studies folder")
        self.get_image_uri(image_id)  # refuses one outside
        for tag in list(self._datastore.objects[image_id].labels):
            self.get_label_uri(image_id, tag)
        super().remove_image(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        self._check(image_id, "image id")
        self._check(label_tag, "label tag")
        self._check_ext(label_filename, "label file")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"no image {image_id!r} in the studies folder to label")
        _, ext = self._to_id(os.path.basename(label_filename))
        folder = self._datastore.label_path(label_tag)
        self._check_inside(os.path.join(folder, "x"), f"label folder {label_tag!r}")
        self._check_inside(os.path.join(folder, self._filename(image_id, ext)), f"label {image_id!r} ({label_tag})")
        shape = self._readable(label_filename, f"the label for {image_id!r}")
        image_shape = self._readable(self.get_image_uri(image_id), f"image {image_id!r}")
        if shape is not None and image_shape is not None and shape[:len(image_shape)] != image_shape[:len(shape)]:
            raise HTTPException(status_code=422, detail=f"the label for {image_id!r} is "
                                f"{'x'.join(map(str, shape))} but the image is {'x'.join(map(str, image_shape))}; "
                                "a label map has its image's size")
        try:
            values = label_values(label_filename)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=f"the label for {image_id!r} is not a label map: {e}") from e
        problem = label_values_problem(values, self.allowed_labels)
        if problem:
            raise HTTPException(status_code=422, detail=f"the label for {image_id!r}: {problem}")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    # ------------------------------------------------------------------ scores (active learning)
    def reload(self) -> None:
        """Read ``datastore_v2.json`` again if another process (a ``/train`` or ``/scoring`` task) changed it."""
        self._init_from_datastore_file()

    def update_scores(self, bundle: str, records: dict[str, dict[str, Any]]) -> None:
        """Keep ``records`` (``{image id: record}``, see :func:`fewlabel.label_server.scores.score_record`)
        as ``bundle``'s entry under ``info["fewlabel_uncertainty"]`` of each image, in one write.

        The file is read again under its lock first: the task processes that score and the server
        each hold their own copy, and MONAI Label's ``update_image_info`` would write back a stale
        one (dropping a label saved meanwhile). Images removed meanwhile are skipped.
        """
        with FileLock(self._lock_file):
            if os.path.exists(self._datastore_config_path):
                with open(self._datastore_config_path) as fh:
                    self._datastore = LocalDatastoreModel.model_validate_json(fh.read())
                self._datastore.base_path = self._datastore_path
            for image_id, record in records.items():
                obj = self._datastore.objects.get(image_id)
                if obj is None:
                    continue
                scores = dict(obj.image.info.get(SCORE_KEY) or {})
                scores[bundle] = dict(record)
                obj.image.info[SCORE_KEY] = scores
            self._update_datastore_file(lock=False)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        if not self.get_label_uri(label_id, label_tag):  # checks the id, the tag and where it leads
            raise HTTPException(status_code=404, detail=f"no label {label_id!r} with tag {label_tag!r}")
        super().remove_label(label_id, label_tag)


class StudiesOnlyApp:
    """Mixin for a ``MONAILabelApp``: a :class:`StudiesDatastore`, and images for ``infer`` by id only.

    Put it first among the bases: ``class App(StudiesOnlyApp, StockApp, MONAILabelApp)``.
    """

    def init_datastore(self) -> StudiesDatastore:
        if self.studies.startswith(("http://", "https://")):
            raise HTTPException(status_code=500, detail="fewlabel's app serves a local studies folder only")
        datastore = StudiesDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                     auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                     read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)
        datastore.allowed_labels = self.served_labels()
        return datastore

    def served_labels(self) -> dict[str, dict[int, str]]:
        """``{bundle: {value: name}}`` of the bundles the server is started with (``--conf models``),
        read as MONAI Label reads them, from ``<app>/model/<bundle>/configs/metadata.json``."""
        names = [n.strip() for n in str(self.conf.get("models", "")).split(",") if n.strip()]
        out = {}
        for name in names:
            path = os.path.join(self.app_dir, "model", name, "configs", "metadata.json")
            if not os.path.isfile(path):
                continue
            with open(path) as fh:
                try:
                    out[name] = bundle_labels(json.load(fh))
                except (ValueError, json.JSONDecodeError) as e:
                    raise RuntimeError(f"{path}: {e}") from e
        return out

    def init_infers(self) -> dict[str, Any]:
        """The stock inference tasks; the server log says which bundles serve demo weights, and which file."""
        infers = super().init_infers()
        from fewlabel.label_server.app import WEIGHTS_NOTE

        for name in infers:
            path = os.path.join(self.app_dir, "model", name, "configs", "metadata.json")
            with contextlib.suppress(OSError, json.JSONDecodeError):
                with open(path) as fh:
                    note = json.load(fh).get(WEIGHTS_NOTE)
                if isinstance(note, dict) and note.get("demo"):
                    logger.warning(f"fewlabel: {name} serves DEMO WEIGHTS {note.get('file')} (trained by `make demo` "
                                   "on phantom data; real weights in the bundle's models/model.pt replace them)")
        return infers

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """The stock ``infer``, with ``request["image"]`` an id of the studies folder.

        A path is taken only when the server's ``/infer`` endpoint made it itself (an uploaded file,
        a session: :data:`~fewlabel.label_server.guard.TRUSTED_IMAGE_PATH`); an uploaded file is
        removed when inference on it fails. An id goes to the stock
        ``infer`` as its file in the studies folder, and a label it is asked to save is saved under
        the id, as the stock ``infer`` does.
        """
        image = request.get("image")
        if not isinstance(image, str):
            return super().infer(request, datastore)
        if TRUSTED_IMAGE_PATH.get() and os.path.isabs(image):
            try:
                return super().infer(request, datastore)
            except BaseException:
                # the endpoint removes its upload only after a response; a failure would leave it behind
                if TRUSTED_IMAGE_PATH.get() == "upload" and os.path.dirname(image) == tempfile.gettempdir():
                    with contextlib.suppress(OSError):
                        os.remove(image)
                raise
        ds = datastore if datastore else self.datastore()
        uri = ds.get_image_uri(image)  # refuses a path, '..', a link leading out
        if not uri or not os.path.isfile(uri):
            raise HTTPException(status_code=404, detail=f"no image {image!r} in the studies folder")
        result = super().infer({**request, "image": uri}, datastore)
        if request.get("save_label", False) and result.get("file") and os.path.exists(result["file"]):
            tag = request.get("label_tag", DefaultLabelTag.ORIGINAL)
            result["label"] = ds.save_label(image, result["file"], tag,
                                            {"model": request.get("model"), "params": result.get("params")})
        return result
