"""``fewlabel code-map``: each bundle's "Where the code is" section names the modules its configs use."""

import json

import pytest

from fewlabel.bundle import REPO_BUNDLES
from fewlabel.code_map import SECTION_TITLE, code_map, config_references, render_section, update_docs
from fewlabel.errors import FewLabelError


def _bundle(tmp_path, configs: dict, doc: str = "# A bundle\n\n## Use\nrun it\n"):
    (tmp_path / "configs" / "variants").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    for name, content in configs.items():
        (tmp_path / "configs" / name).write_text(json.dumps(content))
    (tmp_path / "docs" / "README.md").write_text(doc)
    return tmp_path


def test_names_are_followed_to_their_defining_module(tmp_path):
    bundle = _bundle(tmp_path, {
        "train.json": {"loss": {"_target_": "fewlabel.losses.FocalTverskyLoss"}, "n": 3},
        "variants/fast.json": {"t": "$fewlabel.transforms.otsu_threshold(@x) + 1"},
    })
    refs = config_references(bundle)
    assert refs == {"fewlabel.losses.FocalTverskyLoss": {"train.json"},
                    "fewlabel.transforms.otsu_threshold": {"variants/fast.json"}}
    table = code_map(bundle)
    # re-exported from the package __init__, listed under the file that defines them
    assert table["fewlabel/losses/focal_tversky.py"] == {"names": {"FocalTverskyLoss"}, "configs": {"train.json"}}
    assert table["fewlabel/transforms/threshold.py"]["configs"] == {"variants/fast.json"}


def test_a_stale_dotted_path_is_an_error_naming_the_config(tmp_path):
    bundle = _bundle(tmp_path, {"train.json": {"loss": {"_target_": "fewlabel.losses.NoSuchLoss"}}})
    with pytest.raises(FewLabelError, match=r"fewlabel\.losses\.NoSuchLoss \(in train\.json\)"):
        code_map(bundle)


def test_update_replaces_only_its_section_and_check_does_not_write(tmp_path):
    bundle = _bundle(tmp_path, {"train.json": {"loss": {"_target_": "fewlabel.losses.FocalTverskyLoss"}}})
    doc = bundle / "docs" / "README.md"
    assert update_docs(bundle, check=True) is False
    assert SECTION_TITLE not in doc.read_text()  # --check never writes
    assert update_docs(bundle) is False
    text = doc.read_text()
    assert text.startswith("# A bundle\n\n## Use\nrun it\n") and text.endswith(render_section(bundle))
    assert "| `common/fewlabel/losses/focal_tversky.py` | `FocalTverskyLoss` | `train.json` |" in text
    # a section in the middle of a doc is replaced in place; what follows it stays
    doc.write_text(f"# A bundle\n\n{SECTION_TITLE}\nold table\n\n## Weights\nkeep me\n")
    update_docs(bundle)
    assert doc.read_text() == f"# A bundle\n\n{render_section(bundle)}\n## Weights\nkeep me\n"
    assert update_docs(bundle, check=True) is True


@pytest.mark.parametrize("bundle", sorted(p.name for p in REPO_BUNDLES.iterdir() if (p / "configs").is_dir()))
def test_every_bundle_doc_names_the_code_its_configs_use(bundle):
    assert update_docs(REPO_BUNDLES / bundle, check=True), f"run `fewlabel code-map` ({bundle}'s section is stale)"
