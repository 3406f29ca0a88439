"""The pinned conda environments and the pip requirements hold the same versions."""

import re

import yaml

from conftest import REPO


def _req():
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, ver = line.split("==")
            pins[name.lower()] = ver
    return pins


def test_every_env_pin_matches_requirements():
    req = _req()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pips = [d for d in spec["dependencies"] if isinstance(d, dict)]
        assert pips, f"{env.name}: no pip section"
        for pin in pips[0]["pip"]:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s]+)", pin)
            assert m, f"{env.name}: '{pin}' is not an exact pin"
            name, ver = m.group(1).lower(), m.group(2)
            assert req.get(name) == ver, f"{env.name}: {name}=={ver} but requirements.txt has {req.get(name)}"


def test_requirements_are_exact_pins():
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^\s]*", line), line
