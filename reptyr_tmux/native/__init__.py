"""The programs that run in an adoption's pane: the holder and the steal-mode relay."""
