"""A full-screen curses program with keypad mode on: draws a marker, reports keys it receives."""

import curses
import sys


def main(screen) -> None:
    screen.keypad(True)
    if "--mouse" in sys.argv:
        curses.mousemask(curses.ALL_MOUSE_EVENTS)
    screen.addstr(5, 10, "CURSES-SCREEN ready")
    screen.refresh()
    while True:
        key = screen.getch()
        screen.addstr(7, 10, f"key {key} {'KEY_DOWN' if key == curses.KEY_DOWN else ''}      ")
        if key == curses.KEY_MOUSE:
            screen.addstr(9, 10, "MOUSE-EVENT")
        screen.refresh()


curses.wrapper(main)
