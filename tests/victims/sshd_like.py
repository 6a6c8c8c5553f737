"""A stand-in for sshd: holds the masters of N ptys, each running an interactive bash.

Output of session N is appended to LOGDIR/N.log; a line "N text" on our stdin is typed into session N
(with a newline). Like sshd, we never give the master away and we do not care who else reads it.
"""

import os
import pty
import select
import sys

logdir, count = sys.argv[1], int(sys.argv[2])
masters = {}
for n in range(count):
    pid, master = pty.fork()
    if pid == 0:
        env = dict(os.environ, PS1="$ ", TERM="dumb", HISTFILE="/dev/null")
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    masters[master] = open(os.path.join(logdir, f"{n}.log"), "ab", buffering=0)  # noqa: SIM115
by_number = list(masters)
pending = b""
print("ready", flush=True)
while masters:
    readable, _, _ = select.select([0, *masters], [], [])
    for fd in readable:
        if fd == 0:  # os.read, not readline: a buffered second line would never wake select()
            chunk = os.read(0, 65536)
            if not chunk:
                sys.exit(0)
            pending += chunk
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                n, _, text = line.partition(b" ")
                os.write(by_number[int(n)], text + b"\n")
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            masters.pop(fd).close()
            continue
        masters[fd].write(data)
