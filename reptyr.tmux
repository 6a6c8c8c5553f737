#!/usr/bin/env bash
# reptyr-tmux tmux plugin: prefix + A (or @reptyr-key) picks a running process and adopts it into a pane.
# Works from TPM (set -g @plugin ...) and from a plain `run-shell /path/to/reptyr.tmux`. Logic is in Python.
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cli=$dir/.venv/bin/reptyr-tmux
[ -x "$cli" ] || cli=$(command -v reptyr-tmux) || cli=""
if [ -z "$cli" ]; then  # cloned by TPM and never installed: make a venv inside the plugin, once
  { python3 -m venv "$dir/.venv" && "$dir/.venv/bin/pip" install -q "$dir"; } >/dev/null 2>&1 \
    && cli=$dir/.venv/bin/reptyr-tmux \
    || { tmux display-message "reptyr-tmux: install failed; run: bash $dir/setup.sh"; exit 1; }
fi
exec "$cli" plugin-init "$@"
