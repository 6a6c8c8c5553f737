"""The front ends: the command line, the menu and key binding, the demo."""
