#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal of COLS x ROWS and replays what it
wrote through a small terminal model, the way a user's terminal shows it.

  pty_screen.py COLS ROWS OUT.json [--resize C R AFTER_S] [--input TEXT]
                [--interrupt AFTER_S] -- CMD [ARGS...]

OUT.json: {"rc": exit status, "wraps": writes past the last column (a line
longer than the terminal), "colour": whether an SGR colour was set,
"lines": the scrollback plus the final screen, trailing blanks removed,
"max_len": the longest of those lines}.

--resize changes the size (and sends SIGWINCH) AFTER_S seconds in, with the
program stopped meanwhile so what it wrote before is laid out at the old
size; wraps are then counted against the new width.  --input types TEXT on
the terminal once the command has written something (a prompt).
--interrupt sends SIGINT to the command's process group AFTER_S seconds in,
as a terminal does for Ctrl-C.  The model knows what Kiln's views use:
printable text, CR, LF, BS, TAB, CSI A/B/C/D/G/H/K/J/m and private modes (ignored).
"""
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time


class Screen:
    def __init__(self, cols, rows):
        self.cols, self.rows = cols, rows
        self.grid = [[" "] * cols for _ in range(rows)]
        self.scrollback = []
        self.r = self.c = 0
        self.wraps = 0
        self.colour = False

    def resize(self, cols, rows):
        lines = self.scrollback + ["".join(l) for l in self.grid]
        keep = lines[-rows:] if len(lines) >= rows else lines + [""] * (rows - len(lines))
        self.scrollback = lines[: len(lines) - len(keep)] if len(lines) > rows else []
        self.cols, self.rows = cols, rows
        self.grid = [list(l[:cols].ljust(cols)) for l in keep]
        self.r = min(self.r, rows - 1)
        self.c = min(self.c, cols - 1)

    def linefeed(self):
        if self.r == self.rows - 1:
            self.scrollback.append("".join(self.grid.pop(0)))
            self.grid.append([" "] * self.cols)
        else:
            self.r += 1

    def put(self, ch):
        if self.c >= self.cols:  # the terminal would wrap: the line was too long
            self.wraps += 1
            self.c = 0
            self.linefeed()
        self.grid[self.r][self.c] = ch
        self.c += 1

    def csi(self, params, final):
        private = params.startswith("?")
        nums = [int(p) if p.isdigit() else 0 for p in params.lstrip("?").split(";")] if params else []
        n = nums[0] if nums and nums[0] > 0 else 1
        if private:
            return
        if final == "A":
            self.r = max(0, self.r - n)
        elif final == "B":
            self.r = min(self.rows - 1, self.r + n)
        elif final == "C":
            self.c = min(self.cols - 1, self.c + n)
        elif final == "D":
            self.c = max(0, self.c - n)
        elif final == "G":
            self.c = min(self.cols - 1, n - 1)
        elif final == "H":
            self.r = min(self.rows - 1, (nums[0] if nums and nums[0] else 1) - 1)
            self.c = min(self.cols - 1, (nums[1] if len(nums) > 1 and nums[1] else 1) - 1)
        elif final == "K":
            mode = nums[0] if nums else 0
            c = min(self.c, self.cols)
            rng = range(c, self.cols) if mode == 0 else range(0, c + 1) if mode == 1 else range(self.cols)
            for i in rng:
                if i < self.cols:
                    self.grid[self.r][i] = " "
        elif final == "J":
            mode = nums[0] if nums else 0
            if mode == 0:
                self.csi("", "K")
                for r in range(self.r + 1, self.rows):
                    self.grid[r] = [" "] * self.cols
            elif mode == 2:
                self.grid = [[" "] * self.cols for _ in range(self.rows)]
        elif final == "m":
            if any(x not in (0,) for x in nums):
                self.colour = True

    def feed(self, text):
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                if i + 1 < len(text) and text[i + 1] == "[":
                    j = i + 2
                    while j < len(text) and not ("@" <= text[j] <= "~"):
                        j += 1
                    if j >= len(text):
                        return text[i:]  # incomplete: wait for more
                    self.csi(text[i + 2 : j], text[j])
                    i = j + 1
                    continue
                if i + 1 >= len(text):
                    return text[i:]
                i += 2  # other two-byte escapes: ignored
                continue
            if ch == "\r":
                self.c = 0
            elif ch == "\n":
                self.linefeed()
            elif ch == "\b":
                self.c = max(0, self.c - 1)
            elif ch == "\t":
                self.c = min(self.cols - 1, (self.c // 8 + 1) * 8)
            elif ch >= " ":
                self.put(ch)
            i += 1
        return ""

    def lines(self):
        out = self.scrollback + ["".join(l) for l in self.grid]
        out = [l.rstrip() for l in out]
        while out and out[-1] == "":
            out.pop()
        return out


def set_size(fd, cols, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def main():
    args = sys.argv[1:]
    cols, rows, out = int(args[0]), int(args[1]), args[2]
    args = args[3:]
    resize = None
    typed = None
    interrupt = None
    while args and args[0] in ("--resize", "--input", "--interrupt"):
        if args[0] == "--interrupt":
            interrupt = float(args[1])
            args = args[2:]
        elif args[0] == "--resize":
            resize = (int(args[1]), int(args[2]), float(args[3]))
            args = args[4:]
        else:
            typed = args[1].encode()
            args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    master, slave = os.openpty()
    set_size(slave, cols, rows)
    p = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    scr = Screen(cols, rows)
    dec = __import__("codecs").getincrementaldecoder("utf-8")("replace")
    rest = ""
    t0 = time.time()
    while True:
        if resize and time.time() - t0 >= resize[2]:
            # Stop the program and take everything it wrote at the old size
            # first: otherwise bytes in flight would be laid out at the new
            # one, which no program can prevent.
            os.killpg(p.pid, signal.SIGSTOP)
            while select.select([master], [], [], 0.2)[0]:
                data = os.read(master, 65536)
                if not data:
                    break
                rest = scr.feed(rest + dec.decode(data))
            set_size(master, resize[0], resize[1])
            scr.resize(resize[0], resize[1])
            os.killpg(p.pid, signal.SIGWINCH)
            os.killpg(p.pid, signal.SIGCONT)
            resize = None
        if interrupt is not None and time.time() - t0 >= interrupt:
            os.killpg(p.pid, signal.SIGINT)
            interrupt = None
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                break
            rest = scr.feed(rest + dec.decode(data))
            if typed is not None:
                os.write(master, typed)
                typed = None
        elif p.poll() is not None:
            # drain what is left, then stop
            try:
                while select.select([master], [], [], 0.2)[0]:
                    data = os.read(master, 65536)
                    if not data:
                        break
                    rest = scr.feed(rest + dec.decode(data))
            except OSError:
                pass
            break
    rc = p.wait()
    lines = scr.lines()
    with open(out, "w") as f:
        json.dump({"rc": rc, "wraps": scr.wraps, "colour": scr.colour, "lines": lines,
                   "max_len": max((len(l) for l in lines), default=0)}, f)


if __name__ == "__main__":
    main()
