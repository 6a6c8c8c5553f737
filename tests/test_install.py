"""The install routes as a newcomer takes them: TPM's first load (the venv built in the background,
the key bound once it is ready), a build that fails (the key says what failed and the fix), and the
line for pipx users, which needs the package alone. Real tmux servers, real venvs, real pip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Tmux, wait_for
from test_tmux import attach_client
from users import USER_PATH

from reptyr_tmux.mux.tmux import MENUS_FROM

pytestmark = pytest.mark.tmux  # run again with each other tmux release in CI (.ci/tmux-versions.sh)

ROOT = Path(__file__).resolve().parent.parent
BARE_PATH = USER_PATH  # no reptyr-tmux on it, as on a machine TPM cloned it to (the tmux under test first)
BUILD_S = 300  # a venv and a pip install, on a loaded 2-core machine


def tpm_clone(tmp_path: Path) -> Path:
    """The plugin's files as TPM's clone has them: no venv, nothing built."""
    clone = tmp_path / "reptyr-tmux"
    skip = shutil.ignore_patterns(".git", ".venv", ".venv.building", "__pycache__", "build", "*.egg-info",
                                  ".*_cache")
    shutil.copytree(ROOT, clone, ignore=skip)
    return clone


def load_plugin(clone: Path, tmux: Tmux, **env: str) -> float:
    """Run reptyr.tmux as TPM does (it waits for it); the seconds it took."""
    started = time.monotonic()
    subprocess.run([str(clone / "reptyr.tmux"), "-L", tmux.socket], check=True, timeout=60,
                   env={**os.environ, "PATH": BARE_PATH, **env}, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def binding(tmux: Tmux) -> str:
    return tmux.key_binding("A")


def picker_title() -> str:
    """What prefix + A opens: the menu, or before tmux 3.0 (no display-menu) the numbered window."""
    return "adopt which process?" if Tmux.version() >= MENUS_FROM else "Adopt which process?"


def something_to_adopt(spawn) -> None:
    """A program on a terminal of its own, so the menu has an entry (on a bare machine, as CI's clean
    root is, nothing else may run on a terminal and the key would say there is nothing to adopt)."""
    spawn.on_pty(["sh", "-c", "echo ready; exec sleep 600"])


def test_a_failed_build_says_what_failed_and_the_fix_builds_in_the_background(tmux, spawn, tmp_path):
    clone = tpm_clone(tmp_path)
    something_to_adopt(spawn)
    client = attach_client(tmux, spawn)
    nothing = tmp_path / "no-packages"
    nothing.mkdir()
    offline = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(nothing)}
    load_plugin(clone, tmux, **offline)  # TPM's first load, and pip finds nothing to install
    wait_for(lambda: "pip could not install" in binding(tmux), BUILD_S, "the failure bound to the key")
    assert not (clone / ".venv").exists() and not (clone / ".venv.building").exists()  # no half-made venv
    client.write(b"\x02A")
    client.expect("pip could not install it into")
    fix = re.search(r"fix: (.*)\"$", binding(tmux).strip()).group(1)
    assert fix == f"tmux run-shell {clone}/reptyr.tmux"
    # The fix typed in a pane, network back: tmux waits for the plugin, which must not keep it waiting.
    server = tmux.pane("main:0", "#{socket_path},#{pid},0")
    started = time.monotonic()
    subprocess.run(["sh", "-c", fix], check=True, timeout=60, env={**os.environ, "PATH": BARE_PATH,
                                                                  "TMUX": server})
    assert time.monotonic() - started < 5  # not the ~15 s of the build
    client.expect("setting up in the background")  # said on the status line
    assert "still setting up" in binding(tmux)
    client.write(b"\x02A")
    client.expect("reptyr-tmux is still setting up")
    wait_for(lambda: "still setting up" not in binding(tmux), BUILD_S, "the build to end")
    assert "pick" in binding(tmux)
    client.expect("reptyr-tmux is ready")
    assert (clone / ".venv" / "bin" / "reptyr-tmux").exists() and not (clone / ".venv.building").exists()
    client.write(b"\x02A")
    client.expect(picker_title())
    client.write(b"\x1b")


def test_the_pipx_line_needs_the_package_alone(spawn, tmp_path):
    conf = tmp_path / "tmux.conf"
    conf.write_text("run-shell 'reptyr-tmux plugin-init'\n")  # the README's line for pipx users
    tmux = Tmux(f"reptyr-test-pipx-{os.getpid()}")
    package_bin = os.path.dirname(shutil.which("reptyr-tmux", path=os.path.dirname(sys.executable)) or "")
    assert package_bin, "the package's reptyr-tmux script next to this Python"
    try:
        subprocess.run([*tmux.argv, "-f", str(conf), "new-session", "-d", "-s", "main"], check=True,
                       env={**os.environ, "PATH": f"{package_bin}:{BARE_PATH}"})
        wait_for(lambda: "pick" in binding(tmux), 20, "the key bound from tmux.conf")
        something_to_adopt(spawn)
        client = attach_client(tmux, spawn)
        client.write(b"\x02A")
        client.expect(picker_title())
        client.write(b"\x1b")
    finally:
        tmux.kill()
