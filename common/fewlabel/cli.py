"""The ``fewlabel`` command.

    fewlabel demo [BUNDLE] [--output_dir DIR]       run a bundle's demo (all bundles if none named)
    fewlabel datalist DATASET SRC_DIR -o OUT.json   turn a published dataset layout into a datalist
    fewlabel seeds BUNDLE --seeds 0,1,2,3,4 [--key value]  a bundle's protocol per seed, mean ± std
    fewlabel mask-search [--ratios ..] [--sizes ..] [--seeds ..]   SurgicalSemiSeg's Figure 4 grid
    fewlabel video VIDEO --ckpt_path models/model.pt  SLiPPA landmarks on a video: overlay video + per-frame JSON
    fewlabel bundles                                 list the bundles and their stages
"""

from __future__ import annotations

import json
import logging
import sys

import fire

from fewlabel.errors import FewLabelError

__all__ = ["main", "demo", "datalist", "seeds", "mask_search", "video", "bundles"]


def demo(bundle: str | None = None, output_dir: str = "outputs/demo", quick: bool = False) -> None:
    """Run the demo of ``bundle`` (or of every bundle) on demo data and print where its outputs are.

    Args:
        bundle: bundle folder name (see ``fewlabel bundles``); all bundles when omitted.
        output_dir: where models, metrics and pictures go (one sub-folder per bundle).
        quick: a tiny budget (seconds), to check the pipeline rather than the result.
    """
    from fewlabel.demo import DEMOS, run_demo

    for name in [bundle] if bundle else list(DEMOS):
        run_demo(name, output_dir, quick=quick)  # prints its summary; saved as <output_dir>/<bundle>/summary.json


def datalist(dataset: str, src_dir: str, o: str = "datalist.json", **options) -> str:
    """Write a datalist JSON for a published dataset layout.

    Args:
        dataset: adapter name (isic2017, tissuenet, covid_qu_ex, tiles, cholecseg8k, m2caiseg,
            colour_masks); ``fewlabel.data.adapters.ADAPTERS`` lists them.
        src_dir: the dataset's folder as published.
        o: output JSON path.
        options: adapter options (e.g. ``--channel both`` for TissueNet, ``--tile_size 480``).
    """
    from fewlabel.data.adapters import build_datalist

    path = build_datalist(dataset, src_dir, o, **options)
    content = json.loads(open(path).read())
    counts = {k: len(v) for k, v in content.items() if isinstance(v, list)}
    print(f"wrote {path}: {counts}")
    return str(path)


def seeds(bundle: str, seeds: str = "0,1,2,3,4", output_dir: str = "outputs/seeds", **overrides) -> None:
    """Run ``bundle``'s protocol (e.g. MedSASS: pre-train, then zero-label evaluation) once per seed
    and print the mean and standard deviation of its metrics (also in ``summary.json`` / ``summary.md``).

    Args:
        bundle: bundle folder name.
        seeds: comma-separated seeds (the papers average five).
        output_dir: one sub-folder per seed; seeds already finished are not rerun.
        overrides: config overrides for every stage, e.g. ``--dataset_dir /data/ISIC2017 --epochs 50``.
    """
    from fewlabel.protocols import run_seeds

    run_seeds(bundle, str(seeds), output_dir, **overrides)


def mask_search(**kwargs) -> None:
    """SurgicalSemiSeg's mask-parameter search (Figure 4): ``fewlabel mask-search --ratios 0.2,0.4,0.6
    --sizes 32,64 --seeds 0,1,2 --dataset_dir /data/cholecseg8k``; see :func:`fewlabel.search.mask_search`."""
    from fewlabel.search import mask_search as _search

    _search(**kwargs)


def video(video_path: str, ckpt_path: str, output_dir: str = "outputs/video",
          bundle: str = "slippa_liver_landmark_segmentation", **overrides) -> None:
    """Segment a laparoscopic video frame by frame with a landmark bundle: writes ``<stem>_overlay.mp4``
    and ``<stem>_landmarks.json`` (ordered point lists per frame) into ``output_dir``.

    Args:
        video_path: the video file.
        ckpt_path: the trained weights (the bundle's ``models/model.pt``).
        output_dir: where the outputs go.
        bundle: the bundle whose ``inference.json`` + ``video.json`` run.
        overrides: config overrides, e.g. ``--arch unetplusplus --max_frames 100``.
    """
    from fewlabel.protocols import run_stage

    run_stage(bundle, ["inference.json", "video.json"], video_path=video_path, ckpt_path=ckpt_path,
              output_dir=output_dir, **overrides)


def bundles() -> dict:
    """List the bundles in this checkout with their config files."""
    from fewlabel.bundle import REPO_BUNDLES

    return {
        b.name: sorted(p.name for p in (b / "configs").glob("*.json"))
        for b in sorted(REPO_BUNDLES.iterdir()) if (b / "configs" / "metadata.json").is_file()
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    try:
        fire.Fire({"demo": demo, "datalist": datalist, "seeds": seeds, "mask-search": mask_search, "video": video,
                   "bundles": bundles},
                  name="fewlabel")
    except FewLabelError as e:
        print(f"fewlabel: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
