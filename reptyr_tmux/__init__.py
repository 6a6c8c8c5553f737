"""reptyr-tmux: adopt a running process into a tmux pane."""

__version__ = "0.1.0"
