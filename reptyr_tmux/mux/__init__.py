"""Panes and multiplexers: tmux, GNU screen, the pane an adoption opens and the modes it carries."""
