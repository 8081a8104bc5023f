"""A WAN on one machine: Linux network namespaces, one /24 per site, latency from a userspace relay.

    with Wan([1] * 51) as wan:          # 51 sites, one host each
        wan.hosts[0].ip                  # "10.77.0.2"
        wan.hosts[0].command(["python3", ...])   # ["ip", "netns", "exec", NS, "python3", ...]

Layout (every address lives inside namespaces this object creates; the host's own network is never
touched, and nothing here listens outside them):

- one router namespace `<prefix>-r`. Site k (k = 0, 1, ...) is the subnet 10.77.k.0/24: a bridge
  `b<k>` in the router holds the router's address 10.77.k.1/24;
- each host is a namespace `<prefix>-h<j>` with one veth pair: `eth0` inside (10.77.k.2, .3, ...
  for the hosts of site k, default route via 10.77.k.1), its peer `h<j>` in the router, a port of
  `b<k>`. Hosts of one site talk over their bridge directly (one LAN, no added delay);
- traffic between sites goes through a TUN device `wtun` in the router, read and written by
  tools/wanrelay.py, which holds each packet for the pair's delay. Policy routing does it: a packet
  that arrives on a bridge (`ip rule iif b<k> lookup 100`) meets table 100's only route, `default
  dev wtun`; a packet the relay writes back into the TUN arrives with iif wtun, so it matches no
  such rule and the main table's connected route sends it to its site's bridge. Addresses are never
  rewritten (no NAT): a node sees its peer's real address, which the /24 diversity rule reads.
  rp_filter is off in the router, since with policy routing a source's reverse path is not the
  interface it came in on.

The kernel here has no `netem` qdisc, hence the relay (docs/wan.md).

Namespaces are named `<PREFIX><pid>x<n>-...`: `__exit__` deletes them (and stops the relay)
whatever happened, and `__enter__` first removes those whose creating process is dead (a crashed
earlier run), killing what still runs inside them. Needs root and `ip` (iproute2).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distributeai.sandbox.outdir import pid_alive

PREFIX = "dwan"
ROUTER_TABLE = 100
TUN = "wtun"
NET = "10.77"
# One-way delay between two sites, drawn per site pair in [min, max] (so round trips of 20-80 ms),
# plus a per-packet jitter in [0, JITTER_MS] that never reorders a (source, destination) pair.
DELAY_MS = (10, 40)
JITTER_MS = 5
_counter = itertools.count()


class NetnsError(RuntimeError):
    pass


def unavailable() -> str | None:
    """Why this machine cannot build a Wan (not root, no `ip`, no /dev/net/tun), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no `ip` (iproute2) on PATH"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out


def ip_batch(lines: list[str], ns: str | None = None) -> None:
    """Run `ip` commands in one process (`ip -batch -`), failing on the first error."""
    cmd = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    out = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if out.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {out.stderr.strip()}")


def netns_exec(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@dataclass(frozen=True)
class Host:
    """One namespace on one site: its name, its address and its site's index (10.77.<site>.0/24)."""

    ns: str
    ip: str
    site: int

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` execs it: same pid)."""
        return netns_exec(self.ns, argv)


def remove_leftovers(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces named `<prefix><pid>x...` whose creating process is gone, after killing
    what still runs in them (node processes of a run that crashed). Returns the names removed."""
    out = ip("netns", "list", check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"^{re.escape(prefix)}(\d+)x\d+-", name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        pids = ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


@dataclass
class Wan:
    """Sites of `sites[k]` hosts each (k = 0, 1, ...), connected through a delaying relay.
    `hosts` lists them site by site; `relay_stats` holds the relay's last report after exit."""

    sites: list[int]
    delay_ms: tuple[int, int] = DELAY_MS
    jitter_ms: int = JITTER_MS
    seed: int = 0
    log: Path | None = None  # the relay's stderr; default: discarded
    prefix: str = ""
    hosts: list[Host] = field(default_factory=list)
    router: str = ""
    relay: subprocess.Popen | None = None
    relay_stats: dict = field(default_factory=dict)
    _made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sites or any(n < 1 for n in self.sites) or len(self.sites) > 250:
            raise ValueError("sites: 1 to 250 sites of 1 or more hosts each")
        if sum(self.sites) > 250 * 10 or max(self.sites) > 250:
            raise ValueError("at most 250 hosts per site")
        self.prefix = self.prefix or f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.router = f"{self.prefix}-r"

    def delay(self, a: Host, b: Host) -> int:
        """The one-way delay the relay adds between two hosts' sites (0 within a site), in ms."""
        from .wanrelay import pair_delay_ms

        return 0 if a.site == b.site else pair_delay_ms(a.site, b.site, *self.delay_ms, self.seed)

    def __enter__(self) -> "Wan":
        why = unavailable()
        if why:
            raise NetnsError(why)
        remove_leftovers()
        try:
            self._build()
            self._start_relay()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)

    def _build(self) -> None:
        r = self.router
        self._add_ns(r)
        sysctl = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                  "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0"]
        subprocess.run(netns_exec(r, ["sysctl", "-q", "-w", *sysctl]), check=True, capture_output=True)
        lines = ["link set lo up", f"tuntap add dev {TUN} mode tun", f"link set {TUN} up",
                 f"route add default dev {TUN} table {ROUTER_TABLE}"]
        j = 0
        for k, count in enumerate(self.sites):
            lines += [f"link add b{k} type bridge", f"addr add {NET}.{k}.1/24 dev b{k}", f"link set b{k} up",
                      f"rule add iif b{k} lookup {ROUTER_TABLE} pref 100"]
            for h in range(count):
                host = Host(f"{self.prefix}-h{j}", f"{NET}.{k}.{h + 2}", k)
                self._add_ns(host.ns)
                lines += [f"link add h{j} type veth peer name eth0 netns {host.ns}",
                          f"link set h{j} master b{k}", f"link set h{j} up"]
                self.hosts.append(host)
                j += 1
        ip_batch(lines, ns=r)
        for host in self.hosts:
            ip_batch(["link set lo up", f"addr add {host.ip}/24 dev eth0", "link set eth0 up",
                      f"route add default via {NET}.{host.site}.1"], ns=host.ns)

    def _start_relay(self) -> None:
        err = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.relay = subprocess.Popen(
                netns_exec(self.router, [sys.executable, "-m", "distributeai.tools.wanrelay", "--tun", TUN,
                                         "--delay-min", str(self.delay_ms[0]), "--delay-max", str(self.delay_ms[1]),
                                         "--jitter", str(self.jitter_ms), "--seed", str(self.seed)]),
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        finally:
            if err is not subprocess.DEVNULL:
                err.close()
        assert self.relay.stdout is not None
        line = self.relay.stdout.readline()  # the relay's ready line, once it holds the TUN
        if not line.startswith(b"ready"):
            raise NetnsError(f"the relay did not start (exit code {self.relay.poll()}): {line!r}")

    def relay_cpu_s(self) -> float:
        """CPU seconds (user + system) the relay has used so far."""
        if self.relay is None or self.relay.poll() is not None:
            return float(self.relay_stats.get("cpu_s", 0.0))
        fields = Path(f"/proc/{self.relay.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Stop the relay (keeping its final report in `relay_stats`) and delete every namespace
        this Wan made. Safe to call twice."""
        if self.relay is not None:
            if self.relay.poll() is None:
                self.relay.send_signal(signal.SIGTERM)
            try:
                out, _ = self.relay.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                out, _ = self.relay.communicate()
            for line in (out or b"").decode(errors="replace").splitlines():
                if line.startswith("{"):
                    self.relay_stats = json.loads(line)
            self.relay = None
        for name in reversed(self._made):
            ip("netns", "del", name, check=False)
        self._made.clear()
