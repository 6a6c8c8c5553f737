#!/usr/bin/env bash
# Run inside the arm64 guest by its init (see .ci/arm64-image.sh), in the checkout on its second disk:
# install the package from the wheels the host put there (the guest has no network), then pytest.
set -euo pipefail
export CI=${CI:-true}  # as in .ci/run: a victim that does not build fails its tests instead of skipping them
echo "arm64 guest: $(uname -m), kernel $(uname -r), $(nproc) cpus, python $(python3 -c 'import sys; print(sys.version.split()[0])')"
started=$(date +%s)
# Under emulation every step costs minutes: no build isolation (a second throwaway environment) and no
# byte-compiling at install time (pip, pygments); Python writes what it imports as it goes.
/usr/bin/python3 -m venv --without-pip .venv
pip_wheel=$(ls /usr/share/python-wheels/pip-*.whl | head -n 1)
.venv/bin/python "$pip_wheel/pip" install -q --no-index --no-compile "$pip_wheel"
install=(.venv/bin/python -m pip install -q --no-index --no-compile --find-links .arm64-wheels)
"${install[@]}" setuptools wheel
"${install[@]}" --no-build-isolation -e '.[test]'
.venv/bin/python -m compileall -q reptyr_tmux
echo "installed in $(( $(date +%s) - started )) s"
# The guest's stand-in for the network: every pip the tests start (the plugin's own build among them)
# finds its packages in the wheels the host put here, as a machine with the network finds them on PyPI.
export PIP_NO_INDEX=1 PIP_FIND_LINKS=$PWD/.arm64-wheels
mapfile -t tests <.arm64-tests
# pytest in a process group of its own, below this shell, in this session: the session's leader itself
# (exec'd here, its parent init), its group would be orphaned, and the kernel drops a ^Z sent to an
# orphaned group, which a test sends one of our tools.
.venv/bin/python -c 'import os, sys; os.setpgid(0, 0); os.execv(sys.argv[1], sys.argv[1:])' \
  .venv/bin/python -m pytest -q -p no:cacheprovider --color=no -rfEs "${tests[@]}"
