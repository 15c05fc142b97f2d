"""Every command the documentation shows works as written: checked without training or running it.

Documents: ``README.md`` and every ``bundles/*/docs/README.md``. Commands are the lines of fenced
``bash`` / ``sh`` / ``shell`` / ``console`` (or unlabelled) code blocks, and the inline `code` spans,
that start with ``fewlabel``, ``python -m monai.bundle``, ``python -m fewlabel...``,
``python <script>.py``, ``torchrun ... -m monai.bundle``, ``make`` or a viewer (``xdg-open``,
``itksnap``, whose files must exist or be written before). For each one:

- ``fewlabel SUB``: ``SUB`` is a command of ``fewlabel.cli``; every flag is a parameter of its function,
  or, for commands that pass ``**overrides`` to bundles, a key of the configs they load (``seeds``: the
  bundle's protocol stages; ``sweep``: the spec's stages; ``video``: ``inference.json`` + ``video.json``;
  ``datalist``: the adapter's own options); bundle names and dataset adapters exist.
- ``python -m monai.bundle run|ckpt_export|onnx_export``: the config files exist and every ``--key``
  override (also ``#`` paths such as ``--postprocess#skeleton``) is a key of the merged configs
  (:class:`monai.bundle.ConfigParser`, files read in the order given).
- ``make T VAR=value``: ``T`` is a Makefile target and ``VAR`` a Makefile variable.
- File paths exist, from the repository root (where every documented command is run), or are
  written by an earlier command of the same document: ``-o``, ``--output_dir``, ``--filepath``...;
  the checkpoint ``<ckpt_dir>/<ckpt_name>`` of a training run (a ``monai.bundle run`` without
  ``evaluate*`` / ``inference`` / ``video`` configs); a sweep's run folder. The checkpoint an
  evaluation or inference command reads (``ckpt_path``, given or its config's default) must be such a
  file, so a chain as written evaluates the model it trained. Weights that ``large_files.yml`` lists
  with a download ``url`` (SAM, SAM 2) are the user's to fetch and are not checked.

Conventions for writing commands in the docs:

- ``VAR=value`` lines of a block define ``$VAR`` for the rest of the document (one shell session: the
  reader runs the blocks in order); `` #`` starts a comment; a line ending in ``\\`` continues.
- ``[...]`` around flags or a positional marks them optional; they are checked as if given.
- Placeholders are not checked for existence (the rest of their command is): absolute paths (the
  user's data, ``/data/...``), ``~``, ALL-CAPS words (``DATA``, ``SPEC.yaml``, ``FOLDER_OF_FRAMES``),
  anything with ``<...>`` or ``...``, and the generic flag ``--key value``.

Also checked: fenced ``python`` snippets compile and their ``from fewlabel... import`` names exist;
paths into the package are written ``common/fewlabel/...`` and exist. Later commands may use what
any earlier command of the document wrote (not only the same block): the docs' sections build on
each other, e.g. *Export* exports the model *Commands* trained.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted(REPO.glob("bundles/*/docs/README.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
COMMAND = re.compile(r"^(fewlabel\s|python -m (monai\.bundle|fewlabel)\b|python \S+\.py\b|torchrun\s|make\b|"
                     r"(xdg-open|itksnap)\s)")
VIEWERS = {"xdg-open", "itksnap"}  # "look at the result" steps: their files must exist or be written before
# flags whose value a command writes (not read)
OUTPUT_KEYS = {"o", "output_dir", "ckpt_dir", "filepath", "run_dir", "embedding_cache_dir", "app_dir", "out_dir"}
# flags whose value is relative to another folder than the working directory
RELATIVE_KEYS = {"datalist", "ckpt_name", "overrides", "class_table"}
MONAI_BUNDLE_COMMANDS = {"run", "ckpt_export", "onnx_export", "trt_export", "verify_metadata", "verify_net_in_out"}
READS_NO_TRAINING = ("evaluate", "inference", "video", "monailabel")


@dataclass
class Command:
    """One documented command: the document, its line, the text (variables expanded) and its index."""

    doc: Path
    line: int
    text: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}: {self.text[:90]}"


def _strip_comment(line: str) -> str:
    """The line without a shell comment (`` #`` outside quotes; ``a#b`` is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: env.get(m.group(1), m.group(0)), text)


def extract_commands(doc: Path) -> list[Command]:
    """The commands of ``doc`` in document order (see the module docstring)."""
    lines = doc.read_text().splitlines()
    found: list[tuple[int, str]] = []
    prose = list(lines)
    fence, pending, start = None, "", 0
    env: dict[str, str] = {}
    snapshots: list[tuple[int, dict[str, str]]] = [(0, {})]  # the variables set before each line
    for no, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            prose[no - 1] = ""
            if fence is None:
                fence = stripped[3:].strip().lower()
            else:
                fence = None
            continue
        if fence is None:
            continue
        prose[no - 1] = ""
        if fence not in SHELL_LANGS:
            continue
        if not pending:
            start = no
        pending += _strip_comment(raw).strip() if not pending else " " + _strip_comment(raw).strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        line, pending = pending, ""
        assignment = re.fullmatch(r"([A-Za-z_]\w*)=(\S+)", line)
        if assignment:
            env[assignment.group(1)] = assignment.group(2).strip("'\"")
            snapshots.append((no, dict(env)))
        elif COMMAND.match(_expand(line, env)):
            found.append((start, _expand(line, env)))
    text = "\n".join(prose)
    for m in re.finditer(r"`([^`]+)`", text):
        span = " ".join(m.group(1).split())
        line = text.count("\n", 0, m.start()) + 1
        if COMMAND.match(span) and " " in span:
            found.append((line, _expand(span, [e for n, e in snapshots if n < line][-1])))
    found.sort(key=lambda t: t[0])
    return [Command(doc, line, cmd, i) for i, (line, cmd) in enumerate(found)]


ALL_COMMANDS = [c for doc in DOCS for c in extract_commands(doc)]


def is_placeholder(value: str) -> bool:
    """A value the user replaces (see the module docstring)."""
    return (value.startswith(("/", "~", "$", "http")) or "<" in value or "..." in value
            or re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[\w.]+)?/?", value) is not None)


def looks_like_path(value: str) -> bool:
    return "/" in value and not value.startswith("[") and " " not in value


def _norm(path: str | Path) -> str:
    return str(Path(path)).rstrip("/")


def parse_args(tokens: list[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """Positionals and ``(flag name, value or None)`` pairs of a fire / monai.bundle command line."""
    positionals: list[str] = []
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", tok):
            name, eq, value = tok.lstrip("-").partition("=")
            if not eq:
                nxt = tokens[i + 1] if i + 1 < len(tokens) else None
                value = nxt if nxt is not None and not nxt.startswith("--") else None
                i += value is not None
            flags.append((name.replace("-", "_") if "#" not in name else name, value))
        else:
            positionals.append(tok)
        i += 1
    return positionals, flags


def _literal(value: str | None) -> Any:
    if value is None:
        return True
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "null": None, "none": None}.get(value.lower(), value)


def config_list(value: str) -> list[str]:
    """``--config_file`` as MONAI reads it: one path, or a Python list of paths."""
    parsed = _literal(value)
    return [str(v) for v in parsed] if isinstance(parsed, (list, tuple)) else [str(value)]


def bundle_of(path: str) -> str | None:
    parts = Path(path).parts
    return parts[1] if len(parts) > 1 and parts[0] == "bundles" else None


@cache
def downloadable_weights() -> frozenset[str]:
    """``bundles/<b>/<path>`` of every ``large_files.yml`` entry with a download URL."""
    out = set()
    for f in REPO.glob("bundles/*/large_files.yml"):
        for item in (yaml.safe_load(f.read_text()) or {}).get("large_files", []):
            if item.get("url"):
                out.add(_norm(f.parent.relative_to(REPO) / item["path"]))
    return frozenset(out)


@cache
def makefile() -> tuple[frozenset[str], str]:
    text = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))
    return frozenset(targets), text


def merged_config(files: tuple[str, ...]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in files])
    return parser


@cache
def _merged_keys_cached(files: tuple[str, ...]):
    return merged_config(files)


def bundle_configs(bundle: str, names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(f"bundles/{bundle}/configs/{n}" for n in names)


class Checker:
    """Checks one document's commands in order, remembering what earlier commands write."""

    def __init__(self, doc: Path) -> None:
        self.doc = doc
        self.produced: set[str] = set()
        self.errors: list[str] = []

    # --- helpers -------------------------------------------------------------------------------------
    def error(self, message: str) -> None:
        self.errors.append(message)

    def need_path(self, value: str, what: str) -> None:
        """``value`` must exist from the repository root or be written by an earlier command."""
        if is_placeholder(value):
            return
        norm = _norm(value)
        if (REPO / norm).exists() or norm in downloadable_weights():
            return
        if norm in self.produced or any(norm.startswith(p + "/") for p in self.produced):
            return
        self.error(f"{what} '{value}' does not exist from the repository root and no earlier command of "
                   f"{self.doc.relative_to(REPO)} writes it")

    def need_keys(self, files: tuple[str, ...], keys: list[str], what: str) -> None:
        if not files or not keys:
            return
        parser = _merged_keys_cached(files)
        for key in keys:
            if key != "key" and key not in parser:
                self.error(f"--{key} is not a key of {what} ({', '.join(Path(f).name for f in files)})")

    # --- dispatch ------------------------------------------------------------------------------------
    def check(self, cmd: Command) -> None:
        text = re.sub(r"\[(?!')([^\[\]]*)\]", r"\1", cmd.text)  # optional parts: checked as given
        try:
            tokens = shlex.split(text)
        except ValueError as e:
            self.error(f"does not parse as a shell command: {e}")
            return
        if tokens[0] == "make":
            self.check_make(tokens[1:])
        elif tokens[0] == "torchrun":
            if "-m" not in tokens:
                self.error("torchrun without -m MODULE")
                return
            rest = tokens[tokens.index("-m") + 1:]
            self.check_python_module(rest[0], rest[1:])
        elif tokens[0] == "python":
            if tokens[1] == "-m":
                self.check_python_module(tokens[2], tokens[3:])
            else:
                self.need_path(tokens[1], "script")
        elif tokens[0] == "fewlabel":
            self.check_fewlabel(tokens[1:])
        elif tokens[0] in VIEWERS:
            for tok in tokens[1:]:
                if not tok.startswith("-"):
                    self.need_path(tok, "file to open")

    def check_make(self, args: list[str]) -> None:
        targets, text = makefile()
        for arg in args:
            if "=" in arg:
                var = arg.split("=", 1)[0]
                if not re.search(rf"^{var}\s*[?:]?=|\$\({var}\)", text, re.MULTILINE):
                    self.error(f"make variable {var} is not used in the Makefile")
            elif arg not in targets:
                self.error(f"make target '{arg}' is not in the Makefile (targets: {', '.join(sorted(targets))})")

    def check_python_module(self, module: str, args: list[str]) -> None:
        if module == "monai.bundle":
            self.check_monai_bundle(args)
            return
        if importlib.util.find_spec(module) is None:
            self.error(f"no module {module}")
            return
        _, flags = parse_args(args)
        for name, value in flags:
            if value is not None and looks_like_path(value):
                if name in OUTPUT_KEYS:
                    self.produced.add(_norm(value))
                else:
                    self.need_path(value, f"-{name}")

    # --- python -m monai.bundle ----------------------------------------------------------------------
    def check_monai_bundle(self, args: list[str]) -> None:
        from monai.bundle import scripts

        if not args or args[0] not in MONAI_BUNDLE_COMMANDS:
            self.error(f"unknown monai.bundle command {args[:1]}")
            return
        func = getattr(scripts, args[0])
        params = {n for n, p in inspect.signature(func).parameters.items() if p.kind != p.VAR_KEYWORD}
        positionals, flags = parse_args(args[1:])
        given = dict(flags)
        files = tuple(config_list(given["config_file"])) if given.get("config_file") else ()
        for f in files:
            self.need_path(f, "config file")
        if given.get("meta_file"):
            self.need_path(given["meta_file"], "--meta_file")
        if any(is_placeholder(f) or not (REPO / f).is_file() for f in files):
            files = ()
        try:
            _merged_keys_cached(files) if files else None
        except Exception as e:  # noqa: BLE001 - a config list MONAI cannot merge is the doc's defect
            self.error(f"monai.bundle cannot merge {', '.join(files)}: {type(e).__name__}: {e}")
            files = ()
        overrides = [name for name, _ in flags if name not in params]
        self.need_keys(files, overrides, "the merged configs")
        if args[0] != "run" and positionals:
            self.need_keys(files, positionals[:1], "the configs (net_id)")
        for name, value in flags:
            if name in {"config_file", "meta_file", "logging_file", "args_file"} or value is None:
                continue
            if looks_like_path(value) and name not in RELATIVE_KEYS:
                if name in OUTPUT_KEYS:
                    self.produced.add(_norm(value))
                else:
                    self.need_path(value, f"--{name}")
        if args[0] == "run" and files:
            self.track_checkpoints(files, flags)

    def track_checkpoints(self, files: tuple[str, ...], flags: list[tuple[str, str | None]]) -> None:
        """A training run writes ``<ckpt_dir>/<ckpt_name>``; other runs read ``ckpt_path``."""
        bundle = bundle_of(files[0])
        if bundle is None:
            return
        parser = merged_config(files)
        parser["bundle_root"] = f"bundles/{bundle}"
        for name, value in flags:
            if name in parser and name not in {"dataset_dir", "finetune_dataset_dir", "eval_dataset_dir"}:
                parser[name] = _literal(value)
        training = not any(Path(f).stem.startswith(READS_NO_TRAINING) for f in files)
        try:
            if training and "ckpt_dir" in parser and "ckpt_name" in parser:
                ckpt = Path(parser.get_parsed_content("ckpt_dir")) / parser.get_parsed_content("ckpt_name")
                self.produced.add(_norm(ckpt))
            elif not training and "ckpt_path" in parser:
                path = str(parser.get_parsed_content("ckpt_path"))
                if "ckpt_path" not in dict(flags):  # a given --ckpt_path was checked as a path already
                    self.need_path(path, "the checkpoint this command reads (ckpt_path)")
        except Exception as e:  # noqa: BLE001 - report any resolution failure as the doc's problem
            self.error(f"cannot resolve the checkpoint of {files}: {type(e).__name__}: {e}")

    # --- fewlabel ------------------------------------------------------------------------------------
    def check_fewlabel(self, args: list[str]) -> None:
        from fewlabel import cli

        if not args:
            return
        sub = args[0].replace("-", "_")
        if sub not in cli.__all__ or not callable(getattr(cli, sub, None)):
            self.error(f"fewlabel has no command '{args[0]}'")
            return
        func = getattr(cli, sub)
        sig = inspect.signature(func)
        named = [n for n, p in sig.parameters.items() if p.kind != p.VAR_KEYWORD]
        var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        positionals, flags = parse_args(args[1:])
        if len(positionals) > len(named):
            self.error(f"fewlabel {args[0]} takes at most {len(named)} positional arguments, got {positionals}")
            return
        bound = dict(zip(named, positionals))
        extra = []
        for name, value in flags:
            if name in named:
                bound[name] = value
            elif var_kw:
                extra.append(name)
            else:
                self.error(f"fewlabel {args[0]} has no option --{name} (options: {', '.join(named)})")
        for name, value in bound.items():
            if value is None or not looks_like_path(value) or name in RELATIVE_KEYS:
                continue
            if name in OUTPUT_KEYS:
                self.produced.add(_norm(value))
            elif name not in {"src_dir", "studies"}:  # the user's data
                self.need_path(value, f"{name}")
        getattr(self, f"fewlabel_{sub}", lambda b, e: None)(bound, extra)

    def need_bundle(self, name: str | None) -> bool:
        if name is None or is_placeholder(name):
            return False
        if not (REPO / "bundles" / name / "configs" / "metadata.json").is_file():
            self.error(f"no bundle '{name}' under bundles/")
            return False
        return True

    def fewlabel_demo(self, bound: dict, extra: list[str]) -> None:
        if self.need_bundle(bound.get("bundle")):
            self.produced.add(_norm(Path(bound.get("output_dir") or "outputs/demo") / bound["bundle"]))

    def fewlabel_seeds(self, bound: dict, extra: list[str]) -> None:
        from fewlabel.sweep import load_spec

        bundle = bound.get("bundle")
        if not self.need_bundle(bundle):
            return
        # the spec fewlabel seeds runs (fewlabel.protocols.run_seeds): the bundle's protocol as the stages
        stages = load_spec({"name": f"{bundle}_seeds", "bundle": bundle, "seeds": [0]}).stages
        parsers = [_merged_keys_cached(bundle_configs(bundle, s.configs)) for s in stages]
        for key in extra:
            if key != "key" and not any(key in p for p in parsers):
                self.error(f"--{key} is not a key of any config of {bundle}'s protocol")
        self.produced.add(_norm(Path(bound.get("output_dir") or "outputs/seeds") / bundle))

    def fewlabel_sweep(self, bound: dict, extra: list[str]) -> None:
        spec = bound.get("spec")
        if spec is None or is_placeholder(spec) or not (REPO / spec).is_file():
            return
        from fewlabel.sweep import load_spec

        parsed = load_spec(REPO / spec)
        parsers = [_merged_keys_cached(bundle_configs(parsed.bundle, s.configs)) for s in parsed.stages]
        for key in extra:
            if key != "key" and not any(key.split(":")[-1] in p for p in parsers):
                self.error(f"--{key} is not a key of any stage config of {spec}")
        self.produced.add(_norm(bound.get("run_dir") or f"outputs/sweeps/{parsed.name}"))

    def fewlabel_video(self, bound: dict, extra: list[str]) -> None:
        bundle = bound.get("bundle") or "slippa_liver_landmark_segmentation"
        if self.need_bundle(bundle):
            self.need_keys(bundle_configs(bundle, ("inference.json", "video.json")), extra,
                           f"{bundle}'s inference.json + video.json")

    def fewlabel_datalist(self, bound: dict, extra: list[str]) -> None:
        from fewlabel.data.adapters import ADAPTERS

        name = bound.get("dataset")
        if name is None or is_placeholder(name):
            return
        key = name.lower().replace("-", "_")
        if key not in ADAPTERS:
            self.error(f"no dataset adapter '{name}' (known: {', '.join(sorted(ADAPTERS))})")
            return
        params = inspect.signature(ADAPTERS[key]).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            for option in extra:
                if option not in params:
                    self.error(f"adapter {key} has no option --{option} (options: {', '.join(params)})")

    def fewlabel_label_server(self, bound: dict, extra: list[str]) -> None:
        for name in str(bound.get("bundles") or "").split(","):
            if name.strip():
                self.need_bundle(name.strip())


@cache
def checked(doc: Path) -> dict[int, list[str]]:
    """Errors per command index of ``doc``, checked in document order (later commands see earlier outputs)."""
    checker = Checker(doc)
    out = {}
    for cmd in extract_commands(doc):
        checker.errors = []
        checker.check(cmd)
        out[cmd.index] = list(checker.errors)
    return out


def test_docs_have_commands():
    """Every document shows commands (a broken extractor would check nothing)."""
    for doc in DOCS:
        assert extract_commands(doc), f"no command found in {doc.relative_to(REPO)}"


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=[c.name for c in ALL_COMMANDS])
def test_documented_command(cmd: Command):
    errors = checked(cmd.doc)[cmd.index]
    assert not errors, f"{cmd.name}\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_package_paths_name_common(doc: Path):
    """Paths into the package are written from the repository root (``common/fewlabel/...``) and exist."""
    text = doc.read_text()
    bad = []
    for m in re.finditer(r"`((?:common/)?fewlabel/[^`\s]+)`", text):
        line = text.count("\n", 0, m.start()) + 1
        if not m.group(1).startswith("common/"):
            bad.append(f"line {line}: `{m.group(1)}` lives at `common/{m.group(1)}`")
        elif not (REPO / m.group(1)).exists():
            bad.append(f"line {line}: `{m.group(1)}` does not exist")
    assert not bad, "\n".join(bad)


# --- the checker itself ------------------------------------------------------------------------------------
def _check_text(tmp_path: Path, text: str) -> list[str]:
    doc = tmp_path / "README.md"
    doc.write_text(text)
    checker = Checker.__new__(Checker)
    checker.doc, checker.produced, checker.errors = REPO / "README.md", set(), []
    for cmd in extract_commands(doc):
        checker.check(cmd)
    return checker.errors


def test_extractor_joins_lines_and_expands_variables(tmp_path: Path):
    doc = tmp_path / "README.md"
    doc.write_text("text `fewlabel demo\n  medsass_binary_segmentation` more\n\n```bash\nB=bundles/x/configs\n"
                   "python -m monai.bundle run --config_file \"['$B/train.json']\" \\\n    --epochs 2   # comment\n"
                   "curl http://x\n```\n")
    cmds = [c.text for c in extract_commands(doc)]
    assert cmds == ["fewlabel demo medsass_binary_segmentation",
                    "python -m monai.bundle run --config_file \"['bundles/x/configs/train.json']\" --epochs 2"]


def test_checker_finds_defects(tmp_path: Path):
    """The defects the docs had are found, each with a message naming it; a correct chain passes."""
    b = "bundles/medsass_binary_segmentation/configs"
    m = "bundles/medsass_binary_segmentation/models"

    def errors(block: str) -> str:
        return "\n".join(_check_text(tmp_path, f"```bash\n{block}\n```\n"))

    # a bundle-relative path run from the repository root
    assert "config file 'configs/train.json' does not exist" in errors(
        "python -m monai.bundle run --config_file configs/train.json")
    assert "--no_such_key is not a key" in errors(
        f"python -m monai.bundle run --config_file {b}/train.json --no_such_key 1")
    assert "--postprocess#nothing is not a key" in errors(
        "S=bundles/slippa_liver_landmark_segmentation/configs\n"
        "python -m monai.bundle run --config_file \"['$S/train.json','$S/evaluate.json']\" --postprocess#nothing false")
    # evaluating a checkpoint no earlier command wrote (PolyCL's label_05 chain)
    assert f"(ckpt_path) '{m}/model.pt'" in errors(
        f"python -m monai.bundle run --config_file \"['{b}/train.json','{b}/pretrain.json']\"\n"
        f"python -m monai.bundle run --config_file \"['{b}/train.json','{b}/evaluate.json']\"")
    assert f"--ckpt_file '{m}/model.pt'" in errors(
        f"python -m monai.bundle ckpt_export network_def --filepath {m}/model.ts --ckpt_file {m}/model.pt "
        f"--meta_file {b}/metadata.json --config_file {b}/inference.json")
    assert "cannot merge" in errors(
        "python -m monai.bundle run --config_file bundles/slippa_liver_landmark_segmentation/configs/evaluate.json")
    assert not errors("S=bundles/slippa_liver_landmark_segmentation/configs\n"
                      "python -m monai.bundle run --config_file \"['$S/train.json','$S/evaluate.json']\" "
                      "--postprocess#skeleton false --ckpt_path /data/model.pt")
    assert "fewlabel has no command 'no-such'" in errors("fewlabel no-such x")
    assert "has no option --no_such_flag" in errors("fewlabel demo --no_such_flag 1")
    assert "no bundle 'nobundle'" in errors("fewlabel demo nobundle")
    assert "no dataset adapter 'nodata'" in errors("fewlabel datalist nodata /data/x -o /data/x/d.json")
    assert "--nokey is not a key of any config" in errors("fewlabel seeds medsass_binary_segmentation --nokey 1")
    assert "make target 'nothing'" in errors("make nothing")
    assert "file to open 'outputs/none.png'" in errors("xdg-open outputs/none.png")
    # placeholders are exempt; a training run's checkpoint and -o outputs feed later commands
    assert not errors(f"M={m}\npython -m monai.bundle run --config_file {b}/train.json --epochs 2 --dataset_dir DATA\n"
                      f"python -m monai.bundle run --config_file \"['{b}/train.json','{b}/evaluate.json']\"\n"
                      "python -m monai.bundle run --config_file $B/inference.json --ckpt_path $M/model.pt "
                      "--dataset_dir /data/x --output_dir outputs/x\n"
                      "fewlabel report outputs/x/sub\nmake label-server STUDIES=/data/frames")


@pytest.mark.parametrize("doc", DOCS[1:], ids=lambda d: d.parts[-3])
def test_bundle_doc_has_own_data_in_five_commands(doc: Path):
    """Each bundle's docs take a newcomer from a folder of their data to a result they can look at."""
    text = doc.read_text()
    assert "## On your own data in five commands" in text, f"{doc.relative_to(REPO)}: section missing"
    section = text.split("## On your own data in five commands", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    steps = re.split(r"^# (\d)\. ", block, flags=re.MULTILINE)[1:]
    numbers = steps[0::2]
    assert numbers == ["1", "2", "3", "4", "5"], f"{doc.relative_to(REPO)}: steps {numbers}"
    firsts = [next(line for line in body.splitlines()[1:] if line.strip()) for body in steps[1::2]]
    assert firsts[0].startswith("fewlabel datalist ") and "-o " in firsts[0]
    assert all(line.startswith("python -m monai.bundle run ") for line in firsts[1:4])
    assert "--dataset_dir" in firsts[1] and "--datalist" in steps[7] and firsts[4].split()[0] in VIEWERS
