#!/usr/bin/env python3
"""Reads rendered watt-agent manifests (kustomize output).

  manifest.py lint FILE...           invariants no schema can express
  manifest.py facts FILE --pod-ip IP what deploy/e2e-netns.sh must mirror,
                                      as bash assignments (eval-able)
  manifest.py skips-dockerfile FILE  every `checkov:skip` in a Dockerfile
                                      carries a justification

Used by deploy/check.sh and deploy/e2e-netns.sh, so that the checks and the
namespace test read the capability set, probes and timings from the same
rendered YAML that would be applied: they cannot drift from it.
"""
import argparse
import re
import shlex
import sys

import yaml

CONTAINER = "watt-agent"

# Capability numbers (linux/capability.h).
CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4,
    "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13,
    "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21,
    "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33,
    "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36, "AUDIT_READ": 37,
    "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

# What the agent uses (docs/deploy-eks.md). BPF and PERFMON may be replaced
# by SYS_ADMIN (privileged overlay); NET_BIND_SERVICE may be added for ports
# < 1024. PERFMON: the event-loop signal's tracing programs (without it the
# agent falls back to /proc).
MINIMAL = {"BPF", "PERFMON", "SETUID", "SETGID", "SETPCAP", "KILL", "SYS_PTRACE"}
# SYS_RESOURCE: raising RLIMIT_MEMLOCK for the BPF maps on kernels before
# 5.11 (the eks-al2 overlay only).
OPTIONAL = {"NET_BIND_SERVICE", "SYS_RESOURCE"}
BPF_STANDINS = {"SYS_ADMIN"}
# What a stand-in implies.
STANDS_IN_FOR = {"BPF", "PERFMON"}

# The only host paths the pod may mount, each read-only and with a hostPath
# type that creates nothing: tracefs, for the event-loop signal's tracepoint
# hook (aya reads events/syscalls/<name>/id there).
HOSTPATHS = {"/sys/kernel/tracing": {"mountPath": "/sys/kernel/tracing", "type": "Directory"}}


def load(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs.extend((path, d) for d in yaml.safe_load_all(f) if d)
    return docs


def cap_name(c):
    c = c.upper()
    return c[4:] if c.startswith("CAP_") else c


def duration_seconds(text):
    """`10s`, `500ms`, `1m 30s` (the agent's humantime subset used here)."""
    total, found = 0.0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?", str(text)):
        found = True
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    if not found:
        raise ValueError(f"not a duration: {text!r}")
    return total


class DaemonSet:
    def __init__(self, path, doc):
        self.path = path
        self.doc = doc
        self.spec = doc["spec"]["template"]["spec"]
        matches = [c for c in self.spec["containers"] if c["name"] == CONTAINER]
        if len(matches) != 1:
            raise SystemExit(f"{path}: DaemonSet has no container named {CONTAINER}")
        self.c = matches[0]
        self.sc = self.c.get("securityContext", {})
        self.env = {e["name"]: e for e in self.c.get("env", [])}
        self.ports = {p["name"]: p["containerPort"] for p in self.c.get("ports", []) if "name" in p}

    def env_value(self, name, default=None):
        e = self.env.get(name)
        return e.get("value", default) if e else default

    def caps_added(self):
        return [cap_name(c) for c in self.sc.get("capabilities", {}).get("add", [])]

    def caps_dropped(self):
        return [cap_name(c) for c in self.sc.get("capabilities", {}).get("drop", [])]

    def port(self, ref):
        return self.ports[ref] if isinstance(ref, str) else int(ref)

    def probe(self, kind):
        p = self.c.get(kind)
        if not p or "httpGet" not in p:
            return None
        g = p["httpGet"]
        return {
            "path": g.get("path", "/"),
            "port": self.port(g["port"]),
            "host": g.get("host"),
            "period": p.get("periodSeconds", 10),
            "timeout": p.get("timeoutSeconds", 1),
            "failure": p.get("failureThreshold", 3),
        }

    def prestop_seconds(self):
        pre = self.c.get("lifecycle", {}).get("preStop", {})
        if "sleep" in pre:
            return int(pre["sleep"]["seconds"])
        cmd = pre.get("exec", {}).get("command", [])
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            return int(cmd[1])
        return 0

    def emptydir_mounts(self):
        vols = {v["name"]: v for v in self.spec.get("volumes", [])}
        return [m["mountPath"] for m in self.c.get("volumeMounts", [])
                if "emptyDir" in vols.get(m["name"], {})]

    def hostpaths(self):
        """[(host path, hostPath type, mountPath, read-only)] of the container."""
        vols = {v["name"]: v for v in self.spec.get("volumes", [])}
        out = []
        for m in self.c.get("volumeMounts", []):
            hp = vols.get(m["name"], {}).get("hostPath")
            if hp is not None:
                out.append((hp["path"], hp.get("type", ""), m["mountPath"], bool(m.get("readOnly"))))
        return out

    def expanded_env(self, pod_ip):
        """The container's environment as the kubelet would build it:
        fieldRef status.podIP, then $(VAR) references to earlier entries."""
        out = {}
        for e in self.c.get("env", []):
            if "value" in e:
                v = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: out.get(m.group(1), m.group(0)), str(e["value"]))
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") in ("status.podIP", "status.hostIP"):
                v = pod_ip
            else:
                raise SystemExit(f"{self.path}: env {e['name']}: cannot emulate {e.get('valueFrom')}")
            out[e["name"]] = v
        return out


def daemonsets(docs):
    return [DaemonSet(p, d) for p, d in docs if d.get("kind") == "DaemonSet"]


def skip_annotations(doc):
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in ann.items() if k.startswith("checkov.io/skip")}


def lint(paths):
    docs = load(paths)
    errors = []

    def err(path, msg):
        errors.append(f"{path}: {msg}")

    dss = daemonsets(docs)
    if not dss:
        errors.append("no DaemonSet found")
    for ds in dss:
        p = ds.path
        spec = ds.spec
        if not spec.get("hostNetwork"):
            err(p, "hostNetwork must be true (the agent serves the node's port)")
        if spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
            err(p, "dnsPolicy must be ClusterFirstWithHostNet with hostNetwork")
        if spec.get("hostPID") or spec.get("hostIPC"):
            err(p, "hostPID/hostIPC are not needed")
        ru = ds.doc["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
        if str(ru.get("maxSurge", 0)) not in ("0", "0%"):
            err(p, "maxSurge must be 0: a surge pod needs the same host ports on the same node")

        # Capabilities: drop ALL, add the minimal set (BPF or a stand-in).
        if ds.caps_dropped() != ["ALL"]:
            err(p, f"capabilities.drop must be [ALL], is {ds.caps_dropped()}")
        added = set(ds.caps_added())
        unknown = added - set(CAPS)
        if unknown:
            err(p, f"unknown capabilities {sorted(unknown)}")
        base = (added - BPF_STANDINS) | (STANDS_IN_FOR if added & BPF_STANDINS else set())
        if not MINIMAL <= base:
            err(p, f"capabilities.add lacks {sorted(MINIMAL - base)}")
        extra = added - MINIMAL - OPTIONAL - BPF_STANDINS
        if extra:
            err(p, f"capabilities.add has more than the agent uses: {sorted(extra)}")
        if added & BPF_STANDINS and added & STANDS_IN_FOR:
            err(p, f"SYS_ADMIN already implies {sorted(added & STANDS_IN_FOR)}; add one or the other")
        if ds.sc.get("privileged"):
            err(p, "privileged: true is not needed; the privileged overlay uses SYS_ADMIN instead")
        if not added & BPF_STANDINS and ds.sc.get("allowPrivilegeEscalation", True):
            err(p, "allowPrivilegeEscalation must be false (only the SYS_ADMIN fallback needs it)")
        if ds.sc.get("runAsUser", None) != 0:
            err(p, "the agent must run as uid 0 (it starts workers as WATT_USER)")
        if not ds.env_value("WATT_USER"):
            err(p, "WATT_USER must be set: workers must not run as root")
        for host, kind, mount, ro in ds.hostpaths():
            want = HOSTPATHS.get(host)
            if not want:
                err(p, f"hostPath {host} is not needed (allowed: {sorted(HOSTPATHS)})")
                continue
            if not ro:
                err(p, f"hostPath {host} must be mounted readOnly")
            if mount != want["mountPath"]:
                err(p, f"hostPath {host} must be mounted at {want['mountPath']}, is {mount}")
            if kind != want["type"]:
                err(p, f"hostPath {host}: type must be {want['type']} (creates nothing), is {kind!r}")

        # Filesystem: read-only root, the runtime dir on an emptyDir.
        if not ds.sc.get("readOnlyRootFilesystem"):
            err(p, "readOnlyRootFilesystem should be true")
        rt = ds.env_value("RUNTIME_DIRECTORY")
        if not rt or rt not in ds.emptydir_mounts():
            err(p, "RUNTIME_DIRECTORY must be set and be an emptyDir mount (read-only root)")

        # Admin API and probes.
        admin = ds.env_value("WATT_ADMIN", "")
        m = re.fullmatch(r"\[?\$\(POD_IP\)\]?:(\d+)", admin)
        if not m:
            err(p, f"WATT_ADMIN must be $(POD_IP):<port> (probes reach the pod IP), is {admin!r}")
        elif int(m.group(1)) != ds.ports.get("admin"):
            err(p, "WATT_ADMIN port differs from the container port named admin")
        if ds.env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
            err(p, "POD_IP must come from status.podIP")
        ready, live = ds.probe("readinessProbe"), ds.probe("livenessProbe")
        if not ready or ready["path"] != "/readyz" or ready["port"] != ds.ports.get("admin"):
            err(p, "readinessProbe must be httpGet /readyz on the admin port")
        if not live or live["path"] != "/healthz" or live["port"] != ds.ports.get("admin"):
            err(p, "livenessProbe must be httpGet /healthz on the admin port")
        for probe in (ready, live):
            if probe and probe["host"]:
                err(p, "probes must not set host: they reach the pod IP")
        if str(ds.env_value("PORT")) != str(ds.ports.get("http")):
            err(p, "PORT differs from the container port named http")

        # Timings: grace >= preStop + kill timeout + slack.
        grace = spec.get("terminationGracePeriodSeconds", 30)
        pre = ds.prestop_seconds()
        kill = duration_seconds(ds.env_value("WATT_KILL_TIMEOUT", "10s"))
        if pre <= 0:
            err(p, "preStop must sleep (the NLB needs time to stop sending to the node)")
        if grace < pre + kill + 5:
            err(p, f"terminationGracePeriodSeconds {grace} < preStop {pre} + kill timeout {kill:g} + 5")
        if not spec.get("automountServiceAccountToken") is False:
            err(p, "automountServiceAccountToken should be false (the agent does not use the API)")
        if not spec.get("priorityClassName"):
            err(p, "priorityClassName should be set")

    # Load balancer Services must not expose the admin port.
    admin_ports = {ds.ports.get("admin") for ds in dss}
    for path, d in docs:
        if d.get("kind") == "Service" and d["spec"].get("type") == "LoadBalancer":
            for port in d["spec"].get("ports", []):
                if port.get("targetPort") in ("admin",) or port.get("targetPort") in admin_ports:
                    err(path, f"Service {d['metadata']['name']} exposes the admin port through a load balancer")
            if d["spec"].get("externalTrafficPolicy") != "Local":
                err(path, f"Service {d['metadata']['name']}: externalTrafficPolicy should be Local")

    # Every checkov skip carries a reason.
    for path, d in docs:
        for key, value in skip_annotations(d).items():
            check, _, reason = str(value).partition("=")
            if not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check) or len(reason.strip()) < 20:
                err(path, f"{key}: a skip needs CHECK_ID=justification (20+ characters), got {value!r}")
            if reason.count("=") or "=" in check:
                err(path, f"{key}: checkov splits on '=', the reason must not contain one")

    for e in errors:
        print(f"  FAIL {e}")
    return 1 if errors else 0


def skips_dockerfile(path):
    bad = 0
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        m = re.search(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", line)
        if m and len((m.group(2) or "").strip()) < 20:
            print(f"  FAIL {path}:{n}: checkov:skip={m.group(1)} needs a justification (':' and 20+ characters)")
            bad = 1
        m = re.search(r"hadolint ignore=([A-Z0-9,]+)", line)
        if m:
            prev = open(path, encoding="utf-8").read().splitlines()[n - 2] if n > 1 else ""
            if not prev.lstrip().startswith("#") or "hadolint" in prev:
                print(f"  FAIL {path}:{n}: hadolint ignore={m.group(1)} needs a comment line above saying why")
                bad = 1
    return bad


def facts(paths, pod_ip):
    dss = daemonsets(load(paths))
    if len(dss) != 1:
        raise SystemExit(f"expected one DaemonSet, found {len(dss)}")
    ds = dss[0]
    added = ds.caps_added()
    mask = 0
    for c in added:
        mask |= 1 << CAPS[c]
    ready, live = ds.probe("readinessProbe"), ds.probe("livenessProbe")
    env = ds.expanded_env(pod_ip)
    out = {
        "M_CAPS": ",".join(c.lower() for c in added),
        "M_CAP_MASK": f"{mask:016x}",
        "M_NO_NEW_PRIVS": "1" if ds.sc.get("allowPrivilegeEscalation") is False else "0",
        "M_READ_ONLY_ROOT": "1" if ds.sc.get("readOnlyRootFilesystem") else "0",
        "M_RUN_AS_USER": str(ds.sc.get("runAsUser", 0)),
        "M_APP_PORT": str(ds.ports["http"]),
        "M_ADMIN_PORT": str(ds.ports["admin"]),
        "M_READY_PATH": ready["path"] if ready else "",
        "M_READY_PORT": str(ready["port"]) if ready else "",
        "M_READY_PERIOD": str(ready["period"]) if ready else "",
        "M_READY_FAILURES": str(ready["failure"]) if ready else "",
        "M_LIVE_PATH": live["path"] if live else "",
        "M_LIVE_PORT": str(live["port"]) if live else "",
        "M_PRESTOP": str(ds.prestop_seconds()),
        "M_GRACE": str(ds.spec.get("terminationGracePeriodSeconds", 30)),
        "M_KILL_TIMEOUT": f"{duration_seconds(env.get('WATT_KILL_TIMEOUT', '10s')):g}",
    }
    for k, v in out.items():
        print(f"{k}={shlex.quote(v)}")
    print("M_ARGS=(" + " ".join(shlex.quote(a) for a in ds.c.get("args", [])) + ")")
    print("M_ENV=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + ")")
    print("M_EMPTYDIRS=(" + " ".join(shlex.quote(m) for m in ds.emptydir_mounts()) + ")")
    # ro|rw:HOST_PATH:MOUNT_PATH
    print("M_HOSTPATHS=(" + " ".join(shlex.quote(f"{'ro' if ro else 'rw'}:{host}:{mount}")
                                     for host, _, mount, ro in ds.hostpaths()) + ")")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("lint")
    a.add_argument("files", nargs="+")
    a = sub.add_parser("facts")
    a.add_argument("files", nargs="+")
    a.add_argument("--pod-ip", required=True)
    a = sub.add_parser("skips-dockerfile")
    a.add_argument("file")
    args = ap.parse_args()
    if args.cmd == "lint":
        return lint(args.files)
    if args.cmd == "facts":
        return facts(args.files, args.pod_ip)
    return skips_dockerfile(args.file)


if __name__ == "__main__":
    sys.exit(main())
