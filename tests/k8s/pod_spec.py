#!/usr/bin/env python3
"""The containers of deploy/k8s's StatefulSet as processes on this host.

    pod_spec.py MANIFEST DATA_DIR TLS_DIR POD_NAME NAME=BINARY... [kiln=CLI]

Reads every container's command, args, env, ports, readiness probe and
preStop hook exactly as written and prints them as bash assignments
(shlex-quoted), changing only what cannot be the same on a test host:

  - /var/lib/kiln -> DATA_DIR, /etc/kiln/tls -> TLS_DIR (the Secret's files);
  - each containerPort -> a free port, and the wildcard listen address
    (0.0.0.0) -> 127.0.0.1, since tests bind nothing else;
  - the command's binary (/usr/bin/kiln-pusher) -> the built one (NAME=BINARY
    for each container NAME), and /usr/bin/kiln in hooks -> kiln=BINARY.

env entries with valueFrom.fieldRef metadata.name get POD_NAME (what the
kubelet would set); $(VAR) references in command and args are expanded from
the container's env the way the kubelet does.  Output per container NAME
(upper-cased, '-' -> '_'):
  NAME_ARGV=(...)  NAME_ENV=(K=V ...)  NAME_READY=URL  NAME_PRESTOP=(...)
  NAME_PORT_<portname>=N
"""
import re
import shlex
import socket
import sys

import yaml


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def expand(s, env):
    # The kubelet's rule: $(VAR) from the container's env, $$ escapes, an
    # unknown reference stays as written.
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    manifest, data, tls, pod = sys.argv[1:5]
    binaries = dict(a.split("=", 1) for a in sys.argv[5:])
    with open(manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    sts = [d for d in docs if d.get("kind") == "StatefulSet"]
    if len(sts) != 1:
        sys.exit("want exactly one StatefulSet in %s" % manifest)
    containers = sts[0]["spec"]["template"]["spec"]["containers"]

    ports = {}  # containerPort -> free port, shared by all containers of the pod
    for c in containers:
        for p in c.get("ports", []):
            ports[p["containerPort"]] = free_port()

    def rewrite(s):
        s = s.replace("/var/lib/kiln", data).replace("/etc/kiln/tls", tls)
        if "kiln" in binaries:  # the CLI in hooks
            s = re.sub(r"/usr/bin/kiln(?![-\w])", lambda m: binaries["kiln"], s)
        return re.sub(r"(0\.0\.0\.0|\[::\]|127\.0\.0\.1):(\d+)",
                      lambda m: "127.0.0.1:%d" % ports[int(m.group(2))]
                      if int(m.group(2)) in ports else m.group(0), s)

    out = []
    for c in containers:
        var = c["name"].upper().replace("-", "_")
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod
            else:
                sys.exit("%s: env %s: only value and fieldRef metadata.name are emulated"
                         % (c["name"], e["name"]))
        argv = [expand(a, env) for a in c.get("command", []) + c.get("args", [])]
        if c["name"] not in binaries:
            sys.exit("no binary given for container %s" % c["name"])
        argv[0] = binaries[c["name"]]
        argv = [argv[0]] + [rewrite(a) for a in argv[1:]]
        probe = c["readinessProbe"]["httpGet"]
        out.append("%s_ARGV=(%s)" % (var, " ".join(shlex.quote(a) for a in argv)))
        out.append("%s_ENV=(%s)" % (var, " ".join(shlex.quote("%s=%s" % kv) for kv in env.items())))
        out.append("%s_READY=%s" % (var, shlex.quote("http://127.0.0.1:%d%s" % (
            ports[int(probe["port"])], probe.get("path", "/")))))
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        out.append("%s_PRESTOP=(%s)" % (var, " ".join(shlex.quote(rewrite(a)) for a in pre)))
        for p in c.get("ports", []):
            out.append("%s_PORT_%s=%d" % (var, p["name"].upper().replace("-", "_"),
                                          ports[p["containerPort"]]))
    print("\n".join(out))


if __name__ == "__main__":
    main()
