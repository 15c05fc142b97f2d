"""Every documented command works as written: lists, booleans, None and unknown keys on the command line.

fire reads ``--x 0,1,2`` as a tuple, ``--x 3`` as an int, ``--x false`` as the (truthy) string ``"false"``
and ``--x null`` as the string ``"null"``; these tests type values the way users do and check what the
command or the bundle component ends up with.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from monai.bundle import ConfigParser

from fewlabel import cli
from fewlabel.arguments import ArgumentError, as_bool, as_int, as_list, as_optional, config_ids
from fewlabel.bundle import load_bundle_config

from testlib import BUNDLES, REPO

MEDSASS = "medsass_binary_segmentation"
SLIPPA = "slippa_liver_landmark_segmentation"
SPEC = REPO / "bundles" / MEDSASS / "sweeps" / "table3_thresholding.yaml"


class _Planned(Exception):
    """Raised by the recording run_sweep: the plan is checked, nothing runs."""


@pytest.fixture
def planned(monkeypatch):
    """Replace the sweep runner by one that records the spec it is given and stops there."""
    import fewlabel.sweep

    seen = []

    def record(spec, *args, **kwargs):
        seen.append((spec, kwargs))
        raise _Planned

    monkeypatch.setattr(fewlabel.sweep, "run_sweep", record)
    return seen


def _main(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["fewlabel", *argv])
    cli.main()


# ------------------------------------------------------------------ lists


@pytest.mark.parametrize("typed", ["0,1,2", "[0,1,2]", "[0, 1, 2]", (0, 1, 2), [0, 1, 2], ("0", "1", "2")])
def test_lists_are_read_however_they_are_typed(typed):
    assert as_list(typed, "seeds", as_int) == [0, 1, 2]


@pytest.mark.parametrize("typed", [3, "3", [3], 3.0])
def test_a_single_value_is_a_list_of_one(typed):
    assert as_list(typed, "seeds", as_int) == [3]


@pytest.mark.parametrize("typed", ["0,x", (0, "x"), 1.5, True, ""])
def test_a_bad_list_item_names_the_option_and_the_item(typed):
    with pytest.raises(ArgumentError, match=r"seeds: expected"):
        as_list(typed, "seeds", as_int)


@pytest.mark.parametrize("typed", ["0,1,2", (0, 1, 2), [0, 1, 2]])
def test_seeds_command_accepts_every_list_spelling(planned, typed):
    with pytest.raises(_Planned):
        cli.seeds(MEDSASS, seeds=typed)
    assert planned[-1][0].seeds == [0, 1, 2]


@pytest.mark.parametrize("typed", [3, "3"])
def test_seeds_command_accepts_one_seed(planned, typed):
    with pytest.raises(_Planned):
        cli.seeds(MEDSASS, seeds=typed)
    assert planned[-1][0].seeds == [3]


@pytest.mark.parametrize(("argv", "seeds"), [(["--seeds", "0,1,2"], [0, 1, 2]), (["--seeds", "[0,1,2]"], [0, 1, 2]),
                                             (["--seeds", "3"], [3]), (["--seeds=4,5"], [4, 5])])
def test_seeds_from_the_command_line(planned, monkeypatch, argv, seeds):
    with pytest.raises(_Planned):
        _main(monkeypatch, "seeds", MEDSASS, *argv)
    assert planned[-1][0].seeds == seeds


@pytest.mark.parametrize("typed", ["0,1,2", [0, 1, 2], "[0, 1, 2]"])
def test_sweep_specs_read_seeds_the_same_way(typed):
    from fewlabel.sweep import SpecError, load_spec

    assert load_spec({"bundle": MEDSASS, "seeds": typed}).seeds == [0, 1, 2]
    with pytest.raises(SpecError, match=r"'seeds' must be a list of integers \(seeds: expected an integer, got 'x'"):
        load_spec({"bundle": MEDSASS, "seeds": "0,x"})


def test_bad_seed_fails_before_anything_runs(planned, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _main(monkeypatch, "seeds", MEDSASS, "--seeds", "0,x")
    assert exit_info.value.code == 2 and not planned
    assert "seeds: expected an integer, got 'x'" in capsys.readouterr().err


def test_sweep_only_takes_a_list_of_patterns(monkeypatch, capsys):
    _main(monkeypatch, "sweep", str(SPEC), "--dry_run", "true", "--only", "threshold_method-otsu/seed_0,*/seed_1")
    runs = re.findall(r"^# (\S+)", capsys.readouterr().out, re.M)
    assert runs and all(r.endswith("seed_1") or r == "threshold_method-otsu/seed_0" for r in runs)
    assert "threshold_method-otsu/seed_0" in runs and "threshold_method-otsu/seed_1" in runs


# ------------------------------------------------------------------ booleans and None


@pytest.mark.parametrize(("typed", "value"), [(True, True), (False, False), ("true", True), ("False", False),
                                              ("yes", True), ("no", False), (1, True), ("0", False)])
def test_boolean_spellings(typed, value):
    assert as_bool(typed, "skeleton") is value


@pytest.mark.parametrize("typed", ["flase", "", None, 2, "none"])
def test_a_bad_boolean_names_the_key_and_the_accepted_spellings(typed):
    with pytest.raises(ArgumentError, match=r"skeleton: expected a boolean, True/False \(also true/false"):
        as_bool(typed, "skeleton")


@pytest.mark.parametrize("typed", [None, "None", "none", "null", "NULL"])
def test_none_spellings(typed):
    assert as_optional(typed, "max_frames", as_int) is None


def test_optional_values_are_converted_when_given():
    assert as_optional("100", "max_frames", as_int) == 100


def _slippa_parser(configs, **overrides):
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / SLIPPA / "configs" / c) for c in configs])
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("configs", [("inference.json",), ("train.json", "finetune.json", "evaluate.json")])
@pytest.mark.parametrize(("typed", "value"), [("false", False), ("False", False), (False, False), ("true", True)])
def test_postprocess_skeleton_override_means_what_it_says(configs, typed, value):
    """``--postprocess#skeleton false`` switches the skeleton step off in inference and evaluation alike."""
    parser = _slippa_parser(configs, **{"postprocess#skeleton": typed, "postprocess#rdp_epsilon": "null"})
    post = parser.get_parsed_content("landmark_postprocessor")
    assert (post.curves is not None) is value
    if value:
        assert post.curves.rdp_epsilon is None


def test_skeleton_false_changes_the_output():
    labels = np.zeros((48, 48), np.uint8)
    labels[10:30, 20:27] = 1  # a 7 px wide silhouette band: skeletonised to a thin curve, or kept as is
    outputs = {}
    for typed in ("true", "false"):
        post = _slippa_parser(("inference.json",), **{"postprocess#skeleton": typed}).get_parsed_content(
            "landmark_postprocessor")
        outputs[typed] = post(labels)
    assert outputs["false"].masks[0].sum() == (labels == 1).sum()  # the band untouched
    assert outputs["true"].masks[0].sum() < outputs["false"].masks[0].sum()
    assert outputs["true"].paths["silhouette"] and not outputs["false"].paths["silhouette"]


def test_a_bad_boolean_in_a_bundle_override_names_the_key():
    parser = _slippa_parser(("inference.json",), **{"postprocess#skeleton": "flase"})
    with pytest.raises(RuntimeError, match="CurveTracer") as info:  # MONAI wraps it; the cause is shown
        parser.get_parsed_content("landmark_postprocessor")
    assert isinstance(info.value.__cause__, ArgumentError)
    assert "skeleton: expected a boolean, True/False (also true/false" in str(info.value.__cause__)


def _references(value, key):
    """Every string of a config value that mentions ``@key`` (not ``@key_more``)."""
    pattern = re.compile(rf"@{re.escape(key)}(?![A-Za-z0-9_])")
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v, key)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v, key)]
    return [value] if isinstance(value, str) and pattern.search(value) else []


def _consumers(config, key, target=None):
    """(``_target_`` of the enclosing component or None, referencing string) for each use of ``@key``."""
    out = []
    if isinstance(config, dict):
        target = config.get("_target_", None)
        for v in config.values():
            if isinstance(v, str) and _references(v, key):
                out.append((target, v))
            elif isinstance(v, (dict, list)):
                out += _consumers(v, key, target)
    elif isinstance(config, list):
        for v in config:
            if isinstance(v, str) and _references(v, key):
                out.append((None, v))
            elif isinstance(v, (dict, list)):
                out += _consumers(v, key, target)
    return out


@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_every_boolean_or_none_setting_reaches_code_that_reads_its_spellings(bundle):
    """Each top-level key holding a boolean or None (``resume``, ``augment``, ``from_pretrained``, ``max_frames``,
    ...) and ``amp``, ``postprocess#...``, ``demo_kwargs#...`` is read by fewlabel code (which converts with
    ``as_bool`` / ``as_optional``) or by ``$fewlabel.bundle.as_bool(...)`` glue - never handed raw to a MONAI
    component, where ``"false"`` would count as true."""
    folder = REPO / "bundles" / bundle / "configs"
    files = sorted(folder.glob("*.json")) + sorted(folder.glob("variants/*.json"))
    configs = {f.name: json.loads(f.read_text()) for f in files if f.name != "metadata.json"}
    keys = {"amp"} | {k for c in configs.values() for k, v in c.items() if v is None or isinstance(v, bool)}
    settings = [(k, v) for c in configs.values() for k, v in c.items() if isinstance(v, dict) and "_target_" not in v]
    keys |= {k for k, v in settings if any(x is None or isinstance(x, bool) for x in v.values())}  # demo_kwargs, ...
    raw = []
    for key in sorted(keys):
        for name, config in configs.items():
            for target, use in _consumers(config, key):
                via_fewlabel = (target or "").startswith("fewlabel.") and use.startswith("@")
                expr = use.startswith("$") and re.search(rf"fewlabel\.[\w.]+\([^$]*@{re.escape(key)}\b", use)
                if not (via_fewlabel or expr):
                    raw.append(f"{name}: {key} -> {target or 'expression'} {use!r}")
    assert not raw, "booleans/None handed to code that takes 'false' as true:\n" + "\n".join(raw)


def test_fewlabel_components_read_the_command_line_spellings(tmp_path):
    from fewlabel.handlers.training_state import TrainingState
    from fewlabel.losses import PolyCLLoss
    from fewlabel.metrics.volume import VolumeScores
    from fewlabel.networks import build_network
    from fewlabel.networks.transfer import init_from_pretrained
    from fewlabel.sam.cache import EmbeddingCache
    from fewlabel.transforms import CTWindowd, LoadLabel2Dd

    assert TrainingState(tmp_path / "s.pt", resume="false").resume is False
    assert TrainingState(tmp_path / "s.pt", resume="True").resume is True
    assert PolyCLLoss(temperature="null").temperature is None
    assert VolumeScores(percentile="None").percentile is None and VolumeScores(percentile=95).percentile == 95
    assert EmbeddingCache(cache_dir="null").cache_dir is None
    assert CTWindowd("image", check_hu="false").window.check_hu is False
    assert LoadLabel2Dd("label", binary="false").loader.binary is False
    net = build_network("unet", 3, 2, encoder_name="resnet18", deep_supervision="false", encoder_weights_path="null")
    missing = str(tmp_path / "absent.pt")
    assert init_from_pretrained(net, missing, "encoder", "false") is net  # random init, no error for the file
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        init_from_pretrained(net, missing, "encoder", "true")
    with pytest.raises(ArgumentError, match="from_pretrained"):
        init_from_pretrained(net, missing, "encoder", "maybe")


def test_command_flags_read_the_command_line_spellings(monkeypatch, capsys):
    _main(monkeypatch, "sweep", str(SPEC), "--dry_run", "yes", "--run_dir", "null", "--only", "*/seed_0")
    out = capsys.readouterr().out
    assert "outputs/sweeps/medsass_table3/runs" in out  # run_dir null -> the default folder
    with pytest.raises(SystemExit) as exit_info:
        _main(monkeypatch, "sweep", str(SPEC), "--dry_run", "yes", "--force", "flase")
    assert exit_info.value.code == 2
    assert "force: expected a boolean" in capsys.readouterr().err


def test_overrides_passed_on_by_commands_are_converted(planned):
    with pytest.raises(_Planned):
        cli.seeds(MEDSASS, seeds="0", resume="false", **{"train#dataloader#shuffle": "no", "demo_kwargs#seed": "3"})
    overrides = planned[-1][0].overrides
    assert overrides["resume"] is False and overrides["train#dataloader#shuffle"] is False
    assert overrides["demo_kwargs#seed"] == "3"  # not a boolean in the configs: passed on as typed


# ------------------------------------------------------------------ unknown keys


def test_unknown_override_names_the_closest_config_key(planned, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _main(monkeypatch, "seeds", MEDSASS, "--seeds", "0", "--epoch", "50")
    assert exit_info.value.code == 2 and not planned  # refused before anything ran
    assert "unknown option --epoch (did you mean 'epochs'?)" in capsys.readouterr().err


def test_unknown_nested_override_and_stage_keys(monkeypatch, capsys):
    with pytest.raises(ArgumentError, match=r"--postprocess#skeletn \(did you mean 'postprocess#skeleton'\?\)"):
        cli.seeds(SLIPPA, seeds=0, **{"postprocess#skeletn": False})
    with pytest.raises(SystemExit):
        _main(monkeypatch, "sweep", str(SPEC), "--dry_run", "True", "--zero_label:ckpt_nam", "x.pt")
    assert "did you mean 'ckpt_name'" in capsys.readouterr().err
    with pytest.raises(ArgumentError, match="no stage 'finetune'"):
        cli.sweep(str(SPEC), dry_run=True, **{"finetune:epochs": 1})


def test_a_setting_each_run_makes_itself_is_refused(planned):
    with pytest.raises(ArgumentError, match="--seed cannot be given here: .*--seeds"):
        cli.seeds(MEDSASS, seeds="0,1", seed=3)


def test_video_checks_its_overrides_before_running(monkeypatch):
    import fewlabel.protocols

    monkeypatch.setattr(fewlabel.protocols, "run_stage", lambda *a, **k: pytest.fail("ran despite a bad key"))
    with pytest.raises(ArgumentError, match=r"--max_frame \(did you mean 'max_frames'\?\)"):
        cli.video("clip.mp4", "model.pt", max_frame=10)


@pytest.mark.parametrize(("argv", "closest"), [(["demo", "--quik"], "quick"), (["report", "x", "--output-dr", "y"],
                                                                             "output_dir"),
                                                (["code-map", "--chek"], "check")])
def test_unknown_flag_of_a_command_names_the_closest(monkeypatch, capsys, argv, closest):
    with pytest.raises(SystemExit) as exit_info:
        _main(monkeypatch, *argv)
    assert exit_info.value.code == 2
    assert f"did you mean '{closest}'" in capsys.readouterr().err


def test_fire_spellings_of_known_flags_pass_the_check():
    cli.check_flags(["demo", "--quick", "--output-dir=x", "--noquick", "--", "--help"])
    cli.check_flags(["code_map", "--check", "false"])


def test_unknown_datalist_option_names_the_closest(tmp_path):
    with pytest.raises(ArgumentError, match=r"tiles adapter has no option --tile_sise \(did you mean 'tile_size'"):
        cli.datalist("tiles", str(tmp_path), str(tmp_path / "d.json"), tile_sise=480)


def test_config_ids_hold_every_nested_path():
    ids = config_ids(load_bundle_config(SLIPPA, ["train.json", "finetune.json", "evaluate.json"]))
    assert {"postprocess#skeleton", "validate#handlers#0#load_path", "epochs", "_meta_#version"} <= set(ids)
    assert ids["postprocess#skeleton"] is True
