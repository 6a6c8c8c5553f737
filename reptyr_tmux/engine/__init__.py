"""The engine: looks at a process, holds it with ptrace and moves it, every step with its undo."""
