"""A full-screen curses program with keypad mode on: draws a marker, reports keys it receives."""

import curses


def main(screen) -> None:
    screen.keypad(True)
    screen.addstr(5, 10, "CURSES-SCREEN ready")
    screen.refresh()
    while True:
        key = screen.getch()
        screen.addstr(7, 10, f"key {key} {'KEY_DOWN' if key == curses.KEY_DOWN else ''}      ")
        screen.refresh()


curses.wrapper(main)
