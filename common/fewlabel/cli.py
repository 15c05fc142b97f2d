"""The ``fewlabel`` command.

    fewlabel demo [BUNDLE] [--output_dir DIR] [--verbose]  run a bundle's demo (all bundles if none named)
    fewlabel datalist DATASET SRC_DIR -o OUT.json   turn a published dataset layout into a datalist
    fewlabel seeds BUNDLE --seeds 0,1,2,3,4 [--key value]  a bundle's protocol per seed, mean ± std
    fewlabel sweep SPEC.yaml [--run_dir DIR] [--address RAY] [--key value]   a grid x seeds on Ray, then a report
    fewlabel report RUN_DIR                          a sweep's tables and plots (report/report.md)
    fewlabel video VIDEO --ckpt_path models/model.pt  SLiPPA landmarks on a video: overlay video + per-frame JSON
    fewlabel bundles                                 list the bundles in this checkout and their config files
    fewlabel label-server --studies DIR [--port 8000]  serve the bundles from a local MONAI Label server
    fewlabel code-map [--check]                      write each bundle's "Where the code is" docs section
"""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import logging
import multiprocessing
import shlex
import signal
import os
import sys

import fire

from fewlabel.arguments import ArgumentError, as_list, cli_command, closest
from fewlabel.errors import VERBOSE_ENV, FewLabelError, own_error, report_error

__all__ = ["main", "demo", "datalist", "seeds", "sweep", "report", "video", "bundles", "label_server", "code_map"]


@cli_command
def demo(bundle: str | None = None, output_dir: str = "outputs/demo", quick: bool = False,
         verbose: bool = False) -> None:
    """Run the demo of ``bundle`` (or of every bundle) on demo data and print where its outputs are.

    Each stage shows one progress line; its full output goes to ``<output_dir>/<bundle>/logs/``.

    Args:
        bundle: bundle name (see ``fewlabel bundles``) or folder; all bundles when omitted.
        output_dir: where models, metrics and pictures go (one sub-folder per bundle).
        quick: a tiny budget (0.5-2 minutes per bundle on 2 CPU cores), to check the pipeline, not the result.
        verbose: print every stage's full output (every epoch, config parse, MONAI notice) instead of logging it.
    """
    from fewlabel.demo import demo_bundles, run_demo

    for name in [bundle] if bundle else demo_bundles():
        # prints its summary; saved as <output_dir>/<bundle>/summary.json
        run_demo(name, output_dir, quick=quick, verbose=verbose)


@cli_command
def datalist(dataset: str, src_dir: str, o: str = "datalist.json", **options) -> str:
    """Write a datalist JSON for a published dataset layout.

    Args:
        dataset: adapter name. 2D: isic2017, tissuenet, covid_radiography (alias covid19_radiography),
            covid_qu_ex, kvasir_seg, tiles (MedSASS, SAM mining); cholecseg8k, m2caiseg, colour_masks
            (SurgicalSemiSeg); unlabelled_videos (frames of a folder of videos, ``--fps``, default 2 as the
            SurgicalSemiSeg paper's Cholec80), unlabelled_frames (pre-training sets); p2ilf, l3d (SLiPPA).
            CT volumes (PolyCL): lits, msd_liver (alias msd_task03),
            totalsegmentator. ``fewlabel.data.adapters.ADAPTERS`` holds them.
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


@cli_command
def seeds(bundle: str, seeds: str | int | tuple | list = "0,1,2,3,4", output_dir: str = "outputs/seeds",
          **overrides) -> None:
    """Run ``bundle``'s protocol (e.g. MedSASS: pre-train, then zero-label evaluation) once per seed,
    as a sweep on a local Ray instance, and print the mean and standard deviation of its metrics
    (the report is ``<output_dir>/<bundle>/report/report.md``).

    Args:
        bundle: bundle folder name.
        seeds: the seeds, ``0,1,2``, ``[0,1,2]`` or one (``3``); the papers average five.
        output_dir: the sweep goes to ``<output_dir>/<bundle>``; seeds already finished are not rerun.
        overrides: config overrides for every stage, e.g. ``--dataset_dir /data/ISIC2017 --epochs 50``;
            each must be a config id of the protocol's configs (checked before anything runs).
    """
    from fewlabel.protocols import run_seeds

    result = run_seeds(bundle, seeds, output_dir, **overrides)
    print(f"{bundle}: {len(result['seeds'])} seeds; report {result['report']}")
    for name, v in result["metrics"].items():
        print(f"  {name}: {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})")


@cli_command
def sweep(spec: str, run_dir: str | None = None, address: str | None = None, num_cpus: int | None = None,
          num_gpus: int | None = None, cpus_per_run: float = 1, gpus_per_run: float | None = None,
          only: str | list[str] | None = None, force: bool = False, report: bool = True, dry_run: bool = False,
          **overrides) -> None:
    """Run a sweep (a bundle's stages over a grid of overrides and seeds) on Ray and write its report.

    Args:
        spec: the sweep's YAML file, e.g. ``bundles/medsass_binary_segmentation/sweeps/table3_thresholding.yaml``.
        run_dir: output folder (default ``outputs/sweeps/<spec name>``); restarting with the same folder
            runs only unfinished runs.
        address: a running Ray cluster's address; without it a local Ray instance runs the sweep.
        num_cpus, num_gpus: CPUs and GPUs of the local instance (default all).
        cpus_per_run, gpus_per_run: Ray resources of each run (default 1 CPU; 1 GPU when the cluster has GPUs).
        only: run only these runs or cells (shell patterns of ``<cell>/seed_<s>``, ``a,b`` or ``[a,b]``).
        force: rerun the selected runs even when finished.
        report: write ``<run_dir>/report/report.md`` at the end.
        dry_run: print what the spec reproduces, the number of stage runs with and without sharing, the
            shared stage runs and every run's commands; run nothing.
        overrides: config overrides for every run (``--dataset_dir /data/ISIC2017 --epochs 50``); each must be a
            config id of the stages' configs (``<stage>:<id>`` for one stage), checked before anything runs.
    """
    from fewlabel.sweep import check_run_overrides, load_spec, run_sweep, select_runs

    parsed = load_spec(spec)
    overrides = check_run_overrides(parsed, overrides, own=tuple(inspect.signature(sweep).parameters))
    only = as_list(only, "only") if only is not None else None
    if dry_run:
        from fewlabel.sweep.plan import describe

        parsed.overrides = {**parsed.overrides, **overrides}
        folder = run_dir or f"outputs/sweeps/{parsed.name}"
        print(describe(parsed, folder, select_runs(parsed.runs(folder), only)))
        return
    result = run_sweep(parsed, run_dir, address, num_cpus, cpus_per_run, gpus_per_run, only=only, force=force,
                       report=report, num_gpus=num_gpus, **overrides)
    print(f"sweep: {result['done']} of {result['total']} runs done, {len(result['failed'])} failed; "
          f"folder {result['run_dir']}" + (f"; report {result['report']}" if result.get("report") else ""))
    if result["failed"]:
        sys.exit(1)


@cli_command
def report(run_dir: str, output_dir: str | None = None) -> None:
    """Write a sweep's report: Markdown tables (mean ± std over seeds, best in bold) and PNG plots.

    Args:
        run_dir: the sweep's folder (holds ``sweep.yaml`` and ``runs/``).
        output_dir: where ``report.md`` and the pictures go (default ``RUN_DIR/report``).
    """
    from fewlabel.sweep import make_report

    print(f"report: {make_report(run_dir, output_dir)}")


@cli_command
def video(video_path: str, ckpt_path: str, output_dir: str = "outputs/video",
          bundle: str = "slippa_liver_landmark_segmentation", **overrides) -> None:
    """Segment a laparoscopic video frame by frame with a landmark bundle: writes ``<stem>_overlay.mp4``
    and ``<stem>_landmarks.json`` (ordered point lists per frame) into ``output_dir``.

    Args:
        video_path: the video file.
        ckpt_path: the trained weights (the bundle's ``models/model.pt``).
        output_dir: where the outputs go.
        bundle: the bundle whose ``inference.json`` + ``video.json`` run.
        overrides: config overrides, e.g. ``--arch unetplusplus --max_frames 100`` (config ids of
            ``inference.json`` + ``video.json``, checked before anything runs).
    """
    from fewlabel.arguments import check_overrides, config_ids
    from fewlabel.bundle import load_bundle_config
    from fewlabel.protocols import run_stage

    configs = ["inference.json", "video.json"]
    ids = config_ids(load_bundle_config(bundle, configs))
    overrides = check_overrides(overrides, ids, f"{bundle} ({', '.join(configs)})",
                                own=tuple(inspect.signature(video).parameters))
    run_stage(bundle, configs, video_path=video_path, ckpt_path=ckpt_path, output_dir=output_dir, **overrides)


@cli_command
def bundles() -> dict:
    """List the bundles in this checkout (``bundles/<name>/``) and the config files in each ``configs/``.

    Prints ``name: [config files]``; the names are what ``fewlabel demo``, ``fewlabel seeds`` and
    ``--bundles`` take, the files what ``--config_file bundles/<name>/configs/<file>`` can merge.
    """
    from fewlabel.bundle import REPO_BUNDLES

    return {
        b.name: sorted(p.name for p in (b / "configs").glob("*.json"))
        for b in sorted(REPO_BUNDLES.iterdir()) if (b / "configs" / "metadata.json").is_file()
    }


@cli_command
def code_map(check: bool = False) -> None:
    """Write each bundle's "Where the code is" section (docs/README.md) from the modules its configs name.

    Args:
        check: only compare; exit with status 1 naming the stale docs (``make lint`` runs this).
    """
    from fewlabel.bundle import REPO_BUNDLES
    from fewlabel.code_map import update_docs

    stale = [b.name for b in sorted(REPO_BUNDLES.iterdir())
             if (b / "configs" / "metadata.json").is_file() and not update_docs(b, check=check)]
    if check and stale:
        print(f"stale 'Where the code is' sections in: {', '.join(stale)}; run `fewlabel code-map`", file=sys.stderr)
        sys.exit(1)
    print(f"{'checked' if check else 'updated'}: {', '.join(stale) if stale else 'all current'}")


@cli_command
def label_server(studies: str, port: int = 8000, bundles: str | list[str] | None = None,
                 app_dir: str = "outputs/label_server", env_dir: str | None = None, overrides: str | None = None,
                 host: str = "127.0.0.1", rebuild_env: bool = False, prepare_only: bool = False, timeout: float = 600,
                 bundles_dir: str | None = None, cors_origins: str | list[str] | None = None,
                 allow_model_upload: bool = False, max_upload_mb: float = 1024,
                 server_names: str | list[str] | None = None, auth_enable: bool = False,
                 auth_realm_uri: str | None = None, auth_client_id: str | None = None,
                 demo_dir: str | None = "outputs/demo") -> None:
    """Serve the bundles from a local MONAI Label server, for annotation assistance.

    Builds MONAI Label 0.8.5's own environment the first time (a few minutes), puts the bundles
    and their ``models/model.pt`` into the stock ``monaibundle`` app at ``app_dir``, starts the
    server on ``host:port`` and prints how to connect 3D Slicer or a 2D client. Ctrl-C stops it.
    A bundle without ``models/model.pt`` serves the weights ``make demo`` trained, if any (said
    so in the output, the server log and ``/info/``).

    Args:
        studies: folder of the images to annotate (PNG/JPEG frames, NIfTI CT volumes); created if
            missing. Saved labels go to ``<studies>/labels/final/``.
        port: TCP port of the server.
        bundles: bundle names, ``a,b`` or ``[a,b]`` (default every bundle; ``fewlabel bundles`` lists them).
        app_dir: the MONAI Label app folder (weights trained from MONAI Label land in
            ``<app_dir>/model/<bundle>/models/model.pt``; the bundle's own file is not touched).
        env_dir: the MONAI Label environment (default ``$FEWLABEL_LABEL_ENV`` or
            ``~/.cache/fewlabel/monailabel-0.8.5-py3XX``).
        overrides: JSON file ``{bundle: {config id: value}}`` for bundles trained with non-default
            settings, e.g. ``{"medsass_binary_segmentation": {"encoder_name": "resnet18"}}``.
        host: address to bind; the default keeps the server on this machine. Any other address (a team
            server, e.g. ``0.0.0.0``) is refused unless MONAI Label's login is on (``auth_enable``).
        rebuild_env: build the MONAI Label environment again.
        prepare_only: build the environment and the app folder, check the weights, print the
            server command, and stop there.
        timeout: seconds to wait for the server to answer.
        bundles_dir: folder holding the bundle folders (default this checkout's ``bundles/``).
        cors_origins: web origins whose pages may use the server besides its own, e.g. an OHIF viewer's
            ``http://localhost:3000`` (``a,b`` or ``[a,b]``); every other web page's request is refused.
        allow_model_upload: let ``PUT /model/<bundle>`` replace the served weights (an upload that does not
            load safely or fit the network is refused and changes nothing) and ``DELETE`` rename them.
        max_upload_mb: the largest upload (image, label, weights) the server takes, in MB.
        server_names: further ``Host`` names the server answers to, ``a,b`` (a team server's DNS names
            or addresses, without port); requests naming another host are refused (DNS rebinding).
        auth_enable: turn on MONAI Label's own login (``MONAI_LABEL_AUTH_ENABLE``): every request needs a
            token from the OpenID Connect (Keycloak) realm ``auth_realm_uri``.
        auth_realm_uri: that realm (``MONAI_LABEL_AUTH_REALM_URI``), e.g.
            ``https://keycloak.example.org/realms/monailabel``.
        auth_client_id: MONAI Label's client id in the realm (``MONAI_LABEL_AUTH_CLIENT_ID``; MONAI
            Label's default ``monailabel-app``).
        demo_dir: where ``make demo`` wrote; its weights (``<demo_dir>/<bundle>/summary.json`` names
            them) serve a bundle that has no ``models/model.pt``. ``none``: never serve demo weights.
    """
    from fewlabel.bundle import REPO_BUNDLES
    from fewlabel.label_server import ensure_env
    from fewlabel.label_server.app import prepare_app, select_bundles
    from fewlabel.label_server.server import LabelServer, check_exposure, check_port_free, client_instructions

    check_exposure(host, auth_enable, auth_realm_uri)  # before anything else: no login beyond this machine
    names_of_server = [str(n) for n in as_list(server_names, "server_names")] if server_names else []
    bad = [n for n in names_of_server if not n or "/" in n or (n.count(":") == 1 and not n.startswith("["))]
    if bad:
        raise FewLabelError(f"--server_names {bad}: a name is a host name or address without scheme or port, "
                            "e.g. labels.example.org or 10.0.0.5.")
    if not prepare_only:
        check_port_free(host, port)  # before anything else: a server may still be running there

    extra = {}
    if overrides:
        try:
            extra = json.loads(open(overrides).read())
        except (OSError, json.JSONDecodeError) as e:
            raise FewLabelError(f"cannot read --overrides {overrides}: {e}. It must be a JSON file "
                                '{"<bundle>": {"<config id>": value}}.') from e
        if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
            raise FewLabelError(f"--overrides {overrides} must hold {{\"<bundle>\": {{\"<config id>\": value}}}}.")
    names = as_list(bundles, "bundles") if bundles is not None else None
    demo_dir = None if demo_dir is None or str(demo_dir).lower() == "none" else demo_dir
    names = select_bundles(names, bundles_dir or REPO_BUNDLES, extra, demo_dir)  # before a long environment build
    origins = [o.rstrip("/") for o in as_list(cors_origins, "cors_origins")] if cors_origins else []
    bad = [o for o in origins if not o.startswith(("http://", "https://")) or "/" in o.split("://", 1)[1]]
    if bad:
        raise FewLabelError(f"--cors_origins {bad}: an origin is scheme://host[:port], e.g. http://localhost:3000.")
    env = ensure_env(env_dir, rebuild=rebuild_env)
    print(f"app folder {app_dir}:")
    # in a child process: checking the weights imports torch and MONAI, which the launcher, waiting on
    # the server for hours, does not need to hold (about 1.3 GB)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        served = pool.submit(prepare_app, app_dir, env, names, bundles_dir=bundles_dir or REPO_BUNDLES,
                             overrides=extra, demo_dir=demo_dir).result()
    server = LabelServer(app_dir, studies, [b.name for b in served], env, port=port, host=host, cors_origins=origins,
                         allow_model_upload=allow_model_upload, max_upload_mb=max_upload_mb,
                         server_names=names_of_server, auth_enable=auth_enable, auth_realm_uri=auth_realm_uri,
                         auth_client_id=auth_client_id)
    if prepare_only:
        print("server command (run it with the environment of LabelServer.environment()):")
        print("  " + shlex.join(server.command()))
        return
    def _interrupt(signum: int, frame: object) -> None:  # `kill` stops the server too, not only Ctrl-C
        raise KeyboardInterrupt

    # SIGINT too: a launcher started from a script or a background job inherits an ignored SIGINT,
    # and Ctrl-C (or `kill -INT`) would then leave it, and its server, running
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    server.start()
    try:
        print(f"starting MONAI Label (log {server.log_file}) ...")
        info = server.wait_ready(timeout)
        print(client_instructions(server.url, info), flush=True)
        server.process.wait()
        raise FewLabelError(f"the MONAI Label server stopped (code {server.process.returncode}); log "
                            f"{server.log_file}:\n{server.log_tail()}")
    except KeyboardInterrupt:
        print("stopping the server")
    finally:
        server.stop()


COMMANDS = {"demo": demo, "datalist": datalist, "seeds": seeds, "sweep": sweep, "report": report, "video": video,
            "bundles": bundles, "label-server": label_server, "code-map": code_map}


def check_flags(argv: list[str]) -> None:
    """Refuse an unknown ``--flag`` of a command that takes no config overrides, naming the closest option.

    (Commands with overrides check theirs against the configs they load; fire alone would only say
    "could not consume arg".) Flags after a bare ``--`` are fire's own (``-- --help``); ``--noquick``
    is fire's ``--quick False``.

    Raises:
        ArgumentError: the first unknown flag.
    """
    if not argv or argv[0].replace("_", "-") not in COMMANDS:
        return
    command = argv[0].replace("_", "-")
    params = inspect.signature(COMMANDS[command]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for token in argv[1:]:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name not in params and name != "help" and not (name.startswith("no") and name[2:] in params):
                raise ArgumentError(f"fewlabel {command} has no option --{name}{closest(name, params)}; its options: "
                                    f"{', '.join('--' + p for p in params) or 'none'}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    try:
        check_flags(sys.argv[1:])
        fire.Fire(COMMANDS, name="fewlabel")
    except Exception as e:  # noqa: BLE001 - a fewlabel error behind MONAI's wrapping is one line too
        if own_error(e) is None or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
            raise
        report_error(e)
        sys.exit(2)


if __name__ == "__main__":
    main()
