"""The wheel and sdist as a package index and a user get them.

Builds both from a copy of the project (the checkout stays clean), checks
their metadata with twine and by hand (SPDX licence, licence file,
authors, URLs, classifiers, a long description whose links work on an
index), that the sdist holds no half test suite, that building prints no
deprecation banner, then installs the wheel into a new virtual
environment and runs the demo's first steps there: a seed, a node that
joins it, a call between them, and the installed `aemp` command.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SOURCE = PROJECT["urls"]["Source"]
COPIED = ("aemp", "docs", "eg", "README.md", "LICENSE", "MANIFEST.in", "pyproject.toml")

FIRST_STEPS = """
import aemp

async def main():
    async with aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret="s") as seed:
        async with aemp.Node(nodeid="demo", seeds=seed.listeners, secret="s") as node:
            print("joined through", await node.wait_joined(timeout=10))
            echo = seed.port(lambda *m: aemp.snd(m[-1], *m[:-1]))
            print(await node.cal(echo, "hello", 1, timeout=10))

aemp.run(main())
print(aemp.__file__)
"""


def test_readme_links_are_absolute() -> None:
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert links
    for link in links:
        assert link.startswith(("https://", "#")), link
        if link.startswith(SOURCE):
            path = link.removeprefix(f"{SOURCE}/blob/main/").split("#")[0]
            assert (ROOT / path).exists(), link


def copy_project(to: Path) -> Path:
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, to / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, to / name)
    return to


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    src = copy_project(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout + r.stderr


@pytest.mark.slow
def test_build_prints_no_deprecation_banner(dist: tuple[Path, str]) -> None:
    _, log = dist
    assert "deprecat" not in log.lower(), log


@pytest.mark.slow
def test_twine_check(dist: tuple[Path, str]) -> None:
    out, _ = dist
    files = sorted(str(p) for p in out.iterdir())
    assert len(files) == 2, files
    r = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_wheel_metadata(dist: tuple[Path, str]) -> None:
    out, _ = dist
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.parser.Parser().parsestr(
            z.read(f"aemp-{PROJECT['version']}.dist-info/METADATA").decode()
        )
        license_text = z.read(f"aemp-{PROJECT['version']}.dist-info/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert meta["License-Expression"] == "MIT" and "MIT License" in license_text
    assert meta["Author"]
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Source"] == SOURCE and {"Documentation", "Issues"} <= set(urls)
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Framework :: AsyncIO" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX field says it
    body = meta.get_payload()
    assert "](docs/" not in body and "](eg/" not in body
    assert f"]({SOURCE}/blob/main/docs/intro.md)" in body
    assert "aemp/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "eg/", "bench/"))]


@pytest.mark.slow
def test_sdist_has_no_half_test_suite(dist: tuple[Path, str]) -> None:
    out, _ = dist
    (sdist,) = out.glob("*.tar.gz")
    with tarfile.open(sdist) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    assert "LICENSE" in names and "README.md" in names and "docs/intro.md" in names
    assert "eg/demo.py" in names and "aemp/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_new_venv(dist: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = dist
    (wheel,) = out.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # this interpreter's pip installs into the new environment: no pip
    # bootstrap there, and the dependencies come from pip's cache or the index
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet",
         "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    script = tmp_path / "first_steps.py"
    script.write_text(FIRST_STEPS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run(
        [str(py), str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["joined through seed", "('hello', 1)"]
    assert lines[2].startswith(str(env_dir))  # the installed aemp, not the checkout's
    aemp_cmd = env_dir / "bin" / "aemp"
    r = subprocess.run(
        [str(aemp_cmd), "--version"], capture_output=True, text=True, timeout=30, env=env
    )
    assert r.returncode == 0 and r.stdout == f"aemp {PROJECT['version']}\n" and r.stderr == ""


@pytest.mark.slow
def test_the_editable_install_of_dev_py_prints_no_banner(tmp_path: Path) -> None:
    """What dev.py does on a fresh clone (pip install -e, quiet): pip's own
    lines at most, nothing from the project's build."""
    src = copy_project(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", "--no-deps", "-e", str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    ours = [line for line in (r.stdout + r.stderr).splitlines() if not line.startswith("WARNING: ")]
    assert ours == [], "\n".join(ours)
