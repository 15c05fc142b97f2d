"""The MONAI Deploy apps run in an environment of their own; the main environment stays without Holoscan.

From an environment without the SDK (what ``make setup`` builds): ``python -m fewlabel.deploy`` builds
the deploy environment on first use and runs the app there, ``tests/deploy/test_deploy.py`` passes
there, and ``python -m monai.bundle run`` imports no Holoscan and prints no stack-size warning.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from testlib import REPO, bundle_with_weights
from fewlabel.bundle import resolve_datalist
from fewlabel.data import load_datalist
from fewlabel.deploy.env import ensure_deploy_env, env_python, has_deploy_sdk
from fewlabel.envs import env_site_packages

pytestmark = pytest.mark.skipif(has_deploy_sdk(), reason="this environment has the MONAI Deploy SDK itself: "
                                "test_deploy.py runs here directly (make setup installs it no more)")

BUNDLE = "medsass_binary_segmentation"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "common"),
                                                                      os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def deploy_env():
    return ensure_deploy_env(log=print)


@pytest.mark.slow
def test_deploy_environment_holds_the_sdk_beside_its_own_monai(deploy_env):
    site = env_site_packages(deploy_env)
    assert (site / "monai" / "deploy" / "__init__.py").is_file() and (site / "holoscan").is_dir()
    proc = subprocess.run([str(env_python(deploy_env)), "-c", "import monai, monai.deploy.core, torch, fewlabel; "
                           "print(monai.__file__); print(torch.__file__)"], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    own_monai, torch_file = proc.stdout.split()[-2:]
    # its own MONAI (so that monai.deploy is found only there), torch from the environment it is layered on
    assert own_monai.startswith(str(site)) and not torch_file.startswith(str(deploy_env))


@pytest.mark.slow
def test_python_m_fewlabel_deploy_runs_the_app_in_the_deploy_environment(deploy_env, tmp_path):
    """Run from this environment (no SDK), the frames app segments a folder of frames and writes results.json."""
    model = bundle_with_weights(BUNDLE, tmp_path / "bundle")
    frames, first = _frames(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fewlabel.deploy", "-i", str(frames), "-o", str(out), "-m",
                           str(model)], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["mask"] for r in results["frames"]] == [f"{os.path.splitext(first)[0]}_mask.png"]
    assert (out / results["frames"][0]["mask"]).is_file()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the whole of test_deploy.py, whose slowest tests take minutes each
def test_the_deploy_tests_pass_in_the_deploy_environment(deploy_env, request):
    """tests/deploy/test_deploy.py, run by the deploy environment's Python (same marker selection as this run)."""
    args = [str(env_python(deploy_env)), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
            str(REPO / "tests" / "deploy" / "test_deploy.py")]
    if request.config.getoption("markexpr"):
        args += ["-m", request.config.getoption("markexpr")]
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=3500)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail


def _frames(tmp_path):
    """A folder holding one demo frame for MedSASS; returns (folder, frame file name)."""
    datalist = resolve_datalist("", demo="nuclei", demo_kwargs={"num_patients": 4, "images_per_patient": 1,
                                                               "size": [64, 64]})
    first = load_datalist(datalist, "training")[0]["image"]
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(first, frames / os.path.basename(first))
    return frames, os.path.basename(first)


def test_a_bundle_run_imports_no_holoscan_and_prints_no_stack_size_warning(tmp_path):
    """``python -m monai.bundle run`` of a bundle's inference in this environment: no Holoscan warning;
    ``import monai`` finds no monai.deploy and leaves Holoscan out."""
    model = bundle_with_weights(BUNDLE, tmp_path / "bundle")
    frames, name = _frames(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(model / "configs" / "inference.json"), "--bundle_root", str(model), "--dataset_dir",
                           str(frames), "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert (tmp_path / "out" / f"{os.path.splitext(name)[0]}_mask.png").is_file()
    assert "stack size" not in out.lower() and "holoscan" not in out.lower(), out[-3000:]
    proc = subprocess.run([sys.executable, "-c", "import sys, monai; print(sorted(m for m in sys.modules if "
                           "m.startswith(('holoscan', 'monai.deploy'))))"], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]
