"""requirements.lock against pyproject.toml and against what is installed.

A fresh install takes the lock (the README's first command, `.ci/run`): these tests fail when the
lock and the ranges drift apart (a dependency added or a bound moved without `.ci/lock`), and when
the suite itself runs on other versions than the lock's. `.ci/run --newest` runs the suite on the
newest versions the ranges allow, on purpose: it sets RAG_TEST_UNLOCKED=1.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

UNLOCKED = os.environ.get("RAG_TEST_UNLOCKED") == "1"  # read before the fixture that drops RAG_*


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of each pin in requirements.lock."""
    text = (REPO / "requirements.lock").read_text()
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if m:
            pins[canonicalize_name(m[1])] = (m[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_the_lock_holds_every_dependency_within_its_range_and_each_pin_has_a_hash():
    pins = locked()
    assert len(pins) > 100  # the whole tree, not only the direct dependencies
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock: run .ci/lock"
        version = pins[name][0]
        assert req.specifier.contains(Version(version), prereleases=True), (
            f"requirements.lock has {req.name}=={version}, outside pyproject.toml's {req.specifier}: run .ci/lock")
        for extra in req.extras:  # llama-cpp-python[server]: what the extra brings is locked too
            deps = importlib.metadata.requires(req.name) or []
            for dep in (Requirement(d) for d in deps):
                if dep.marker and dep.marker.evaluate({"extra": extra}) and not dep.marker.evaluate({"extra": ""}):
                    assert canonicalize_name(dep.name) in pins, f"{dep.name} ({req.name}[{extra}]) not locked"
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed, f"pins without a hash (pip --require-hashes refuses them): {unhashed}"
    assert pins["torch"][0].endswith("+cpu"), "torch must be its CPU build (.ci/torch-cpu.in)"


def test_every_range_stops_below_an_untested_major_version():
    open_ended = [str(r) for r in requirements()
                  if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)]
    assert not open_ended, f"ranges with no upper bound: {open_ended}"


@pytest.mark.skipif(UNLOCKED, reason="`.ci/run --newest`: the newest allowed versions, on purpose")
def test_the_suite_runs_on_the_locked_versions():
    pins = locked()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    differ = {name: (version, installed[name]) for name, (version, _) in pins.items()
              if name in installed and installed[name] != version}
    missing = sorted(set(pins) - set(installed))
    assert not differ and not missing, (
        f"installed versions differ from requirements.lock {differ}, missing {missing}: "
        "install with `pip install --require-hashes -r requirements.lock` (the README's first command)")


def test_the_readme_and_ci_install_from_the_lock():
    command = "pip install --require-hashes -r requirements.lock"
    quickstart = (REPO / "README.md").read_text().split("```sh\n", 1)[1].split("\n", 1)[0]
    assert command in quickstart and "pip install --no-deps -e ." in quickstart
    ci = (REPO / ".ci" / "run").read_text()
    assert command in ci and "pip install --quiet --no-deps -e ." in ci
    assert "RAG_TEST_UNLOCKED=1" in ci  # the --newest mode says so, for the test above
