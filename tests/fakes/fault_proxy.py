#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 proxy for Kiln's registry tests.

Listens on 127.0.0.1:PORT and forwards each request to 127.0.0.1:UPSTREAM
(one upstream connection per request).  Successive requests take successive
actions from --pattern (cyclic, comma-separated):

  ok        forward unchanged
  429       answer 429 Too Many Requests with Retry-After: 1
  500, 503  answer that status with a registry-style error body
  reset     break the connection in the middle of the body: half of the
            request body is read, then the socket is reset (requests without
            a body: half of the upstream response body is sent, then reset)
  slow      wait 1.5 s, then forward
  throttle  forward, sending the response body at --rate bytes per second
            (time for a test to kill the client in the middle of a download)
  corrupt   forward; flip one byte of a 200 GET response body

Request body bytes received from the client are counted (including bytes of
broken requests) and written with the other counters as JSON to --stats
after every request: {"requests": N, "body_bytes": N, "faults": N,
"range_gets": N} (range_gets: GETs that resumed a download with Range).
"""
import argparse
import json
import os
import socket
import struct
import threading
import time

lock = threading.Lock()
stats = {"requests": 0, "body_bytes": 0, "faults": 0, "range_gets": 0}
state = {"next": 0}


def write_stats(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, path)


def next_action(pattern):
    with lock:
        a = pattern[state["next"] % len(pattern)]
        state["next"] += 1
        stats["requests"] += 1
        if a != "ok":
            stats["faults"] += 1
        return a


def count(n, path):
    with lock:
        stats["body_bytes"] += n
        write_stats(path)


def reset(conn):
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()


def read_headers(rf):
    headers = []
    while True:
        line = rf.readline(65536)
        if not line or line in (b"\r\n", b"\n"):
            return headers
        k, _, v = line.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))


def header(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def read_body(rf, headers, limit=None):
    """Reads a request body (Content-Length or chunked); at most limit bytes."""
    te = header(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        out = bytearray()
        while True:
            size = int(rf.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                read_headers(rf)
                return bytes(out)
            out += rf.read(size)
            rf.readline()
            if limit is not None and len(out) >= limit:
                return bytes(out[:limit])
    n = int(header(headers, "content-length") or "0")
    if limit is not None:
        n = min(n, limit)
    return rf.read(n) if n else b""


def send_error(conn, status, reason, retry_after=None):
    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected %d" % status,
                                   "detail": None}]}).encode()
    h = "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status, reason, len(body))
    if retry_after is not None:
        h += "Retry-After: %d\r\n" % retry_after
    h += "Connection: close\r\n\r\n"
    conn.sendall(h.encode() + body)


def forward(upstream, method, target, headers, body):
    up = socket.create_connection(("127.0.0.1", upstream))
    lines = ["%s %s HTTP/1.1" % (method, target)]
    for k, v in headers:
        if k.lower() in ("connection", "expect", "keep-alive", "proxy-connection",
                         "transfer-encoding"):
            continue
        if k.lower() == "content-length":
            continue
        lines.append("%s: %s" % (k, v))
    if body or method in ("PUT", "PATCH", "POST"):
        lines.append("Content-Length: %d" % len(body))
    lines.append("Connection: close")
    up.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    rf = up.makefile("rb")
    status_line = rf.readline()
    rheaders = read_headers(rf)
    while status_line.split(b" ")[1:2] == [b"100"]:
        status_line = rf.readline()
        rheaders = read_headers(rf)
    rbody = b"" if method == "HEAD" else rf.read()
    te = header(rheaders, "transfer-encoding")
    if te and "chunked" in te.lower():
        rbody = dechunk(rbody)
    up.close()
    return status_line, rheaders, rbody


def broken(upstream, method, target, headers, body):
    """Sends a request whose body stops short of its Content-Length."""
    up = socket.create_connection(("127.0.0.1", upstream))
    lines = ["%s %s HTTP/1.1" % (method, target)]
    for k, v in headers:
        if k.lower() in ("connection", "expect", "keep-alive"):
            continue
        lines.append("%s: %s" % (k, v))
    lines.append("Connection: close")
    up.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    time.sleep(0.2)
    reset(up)


def dechunk(data):
    out = bytearray()
    i = 0
    while i < len(data):
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            break
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2
    return bytes(out)


def handle(conn, args, pattern):
    rf = conn.makefile("rb")
    try:
        if rf.peek(1)[:1] == b"\x16":  # a TLS handshake: this proxy speaks plain HTTP
            reset(conn)
            return
        while True:
            line = rf.readline(65536)
            if not line:
                break
            parts = line.decode("latin-1").split()
            if len(parts) != 3:
                break
            method, target, _ = parts
            headers = read_headers(rf)
            action = next_action(pattern)
            if method == "GET" and header(headers, "range"):
                with lock:
                    stats["range_gets"] += 1
            expect = (header(headers, "expect") or "").lower() == "100-continue"
            clen = int(header(headers, "content-length") or "0")
            has_body = clen > 0 or header(headers, "transfer-encoding") is not None
            if action in ("429", "500", "503"):
                if has_body and not expect:
                    count(len(read_body(rf, headers)), args.stats)
                else:
                    count(0, args.stats)
                if action == "429":
                    send_error(conn, 429, "Too Many Requests", retry_after=1)
                else:
                    send_error(conn, int(action), "Injected")
                break
            if expect and has_body:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if action == "reset" and has_body:
                part = read_body(rf, headers, limit=max(1, clen // 2))
                count(len(part), args.stats)
                reset(conn)
                return
            body = read_body(rf, headers) if has_body else b""
            count(len(body), args.stats)
            if has_body and header(headers, "content-length") and len(body) < clen:
                # The client went away in the middle of the body: let the
                # registry see the same broken request, then stop.
                broken(args.upstream, method, target, headers, body)
                break
            if action == "slow":
                time.sleep(1.5)
            status_line, rheaders, rbody = forward(args.upstream, method, target, headers, body)
            status = int(status_line.split(b" ")[1])
            if action == "corrupt" and method == "GET" and status == 200 and rbody:
                rbody = rbody[:-1] + bytes([rbody[-1] ^ 0x01])
            out = [status_line.rstrip(b"\r\n").decode("latin-1")]
            for k, v in rheaders:
                if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                    continue
                if k.lower() == "content-length" and method != "HEAD":
                    continue
                out.append("%s: %s" % (k, v))
            if method != "HEAD":
                out.append("Content-Length: %d" % len(rbody))
            head = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
            if action == "reset":
                conn.sendall(head + rbody[:len(rbody) // 2])
                reset(conn)
                return
            if action == "throttle":
                conn.sendall(head)
                step = 65536
                for i in range(0, len(rbody), step):
                    conn.sendall(rbody[i:i + step])
                    time.sleep(len(rbody[i:i + step]) / args.rate)
                continue
            conn.sendall(head + rbody)
    except (OSError, ValueError, IndexError):
        pass
    try:
        conn.close()
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--pattern", default="ok")
    ap.add_argument("--stats", required=True)
    ap.add_argument("--rate", type=float, default=4e6, help="throttle: body bytes per second")
    args = ap.parse_args()
    pattern = [p.strip() for p in args.pattern.split(",") if p.strip()] or ["ok"]
    write_stats(args.stats)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, args, pattern), daemon=True).start()


if __name__ == "__main__":
    main()
