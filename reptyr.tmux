#!/usr/bin/env bash
# reptyr-tmux tmux plugin: prefix + A (or @reptyr-key) picks a running process and adopts it into a pane.
# Works from TPM (set -g @plugin ...) and from a plain `run-shell /path/to/reptyr.tmux`. Logic is in Python;
# this only finds it, or on TPM's first load makes it: a venv inside the plugin's directory, built in
# the background (~15 s: tmux waits for this script, and would show nothing meanwhile) while the key and
# the status line say so. If the build fails, the key says what failed and the command that fixes it.
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=$dir/.venv
lock=$dir/.venv.building  # a directory: mkdir is atomic, so one server builds and the others wait
tmux_cmd=(tmux)
[ "${1:-}" = -L ] && tmux_cmd+=(-L "$2")  # a server other than the one running us (the tests')

literal() { local text=${1//\#/##}; printf '%s' "${text//\%/%%}"; }  # no formats, no strftime
# How long a message stays (display-message -d) is tmux 3.2's; older ones show it for display-time.
timed=0
"${tmux_cmd[@]}" display-message -d 1 -p '' >/dev/null 2>&1 && timed=1
for_ms() { if [ "$timed" = 1 ]; then ms=(-d "$1"); else ms=(); fi; }
say() { for_ms "$2"; "${tmux_cmd[@]}" display-message "${ms[@]}" "$(literal "$1")" 2>/dev/null; }
key() { local k; k=$("${tmux_cmd[@]}" show-option -gqv @reptyr-key 2>/dev/null); printf '%s' "${k:-A}"; }
bind_to_message() {
  for_ms 15000
  "${tmux_cmd[@]}" bind-key "$(key)" display-message "${ms[@]}" "$(literal "$1")"
}

fail() {  # what failed, and the one command that fixes it (and then sets the plugin up)
  rm -rf "$venv" "$lock"  # half-made: the next load must not take it for a working one
  local text="reptyr-tmux: $1; fix: $2"
  bind_to_message "$text"
  say "$text" 15000
}

build() {
  local log retry="tmux run-shell $dir/reptyr.tmux"
  log=$(mktemp "${TMPDIR:-/tmp}/reptyr-tmux-setup.XXXXXX")
  if ! command -v python3 >/dev/null; then
    fail "python3 is not installed" "apt-get install python3 python3-venv && $retry"
  elif ! python3 -m venv "$venv" >"$log" 2>&1; then
    if grep -q ensurepip "$log"; then
      fail "python3 -m venv failed: python3-venv is not installed" "apt-get install python3-venv && $retry"
    else
      fail "python3 -m venv $venv failed ($(grep . "$log" | tail -n 1))" "$retry"
    fi
  elif ! "$venv/bin/python" -m pip install -q "$dir" >"$log" 2>&1; then
    fail "pip could not install it into $venv ($(grep . "$log" | tail -n 1)); is the network up?" "$retry"
  elif ! { rm -rf "$lock" && "$venv/bin/reptyr-tmux" plugin-init "$@"; }; then  # it says it is ready
    fail "its key binding could not be made" "$venv/bin/reptyr-tmux plugin-init"
  fi
  rm -f "$log"
}

cli=$venv/bin/reptyr-tmux
[ -x "$cli" ] && [ ! -d "$lock" ] && exec "$cli" plugin-init "$@"
cli=$(command -v reptyr-tmux) && exec "$cli" plugin-init "$@"
if ! mkdir "$lock" 2>/dev/null; then  # being built: by a live process, or left by a dead one
  builder=$(cat "$lock/pid" 2>/dev/null)
  if [ -n "$builder" ] && kill -0 "$builder" 2>/dev/null; then
    bind_to_message "reptyr-tmux is still setting up (a venv in $venv); try again in a few seconds"
    exit 0
  fi
  rm -rf "$lock" "$venv"
  mkdir "$lock" || exit 0
fi
echo $$ >"$lock/pid"  # until the builder's own pid replaces it
rm -rf "$venv"  # a venv without its reptyr-tmux is one a failed or killed build left behind
bind_to_message "reptyr-tmux is still setting up (a venv in $venv); try again in a few seconds"
say "reptyr-tmux: first start, setting up in the background (~15 s); prefix + $(key) works once it is ready (venv: $venv)" 10000
build "$@" </dev/null >/dev/null 2>&1 &
echo $! >"$lock/pid"
exit 0
