"""Discovery timing benchmark: how fast nodes find a new node, and notice a killed one.

For each mesh size N (``--sizes``) and each of ``--rounds`` rounds, on a fresh private bridge
with N hosts in network namespaces (tests/netns.py, needs root):

1. start N-1 nodes and wait until they all list each other as alive; then start the N-th
   node and time until every one of the N-1 lists it as alive in GET /api/peers, from the
   spawn of its process and from the moment its own HTTP API first answered (Python
   start-up is a fixed cost that has nothing to do with discovery);
2. wait until all N see each other, SIGKILL one of the first nodes and time until every
   survivor lists it as dead.

Every node's /api/peers is polled by its own thread every ``--poll-interval`` seconds, so a
polled figure is an upper bound that is late by at most one poll period; the nodes' own log
timestamps (INFO lines on state changes) give a cross-check with millisecond resolution.
By default (``--poll-via setns``) each polling thread enters the node's network namespace
with setns(2) and asks over plain HTTP (about 1 ms a poll); ``--poll-via curl`` runs
``ip netns exec ... curl`` for every poll like tests/netns.py does, which costs two
fork+execs a poll and, on a small machine, slows the start-up of the node being measured.

Run from the repository root, as root:

    .venv/bin/python benchmarks/discovery.py --sizes 3,8 --rounds 3
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import http.client
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# This file shares its name with the ``discovery`` package: drop its own folder (which Python
# puts first on sys.path) so that ``import discovery`` finds the package at the repo root.
SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SCRIPT_DIR]
sys.path.insert(0, str(REPO_ROOT))

from discovery.peers import Liveness  # noqa: E402
from discovery.service import LOOP_INTERVAL  # noqa: E402
from tests.netns import (  # noqa: E402
    NamespacedNode,
    Network,
    init_mesh,
    invite,
    netns_available,
)

FOUND_TARGET = 2.0  # seconds: a new node is found by all others (from the issue)
DEAD_TARGET = 10.0  # seconds: a killed node is dead on all others (from the issue)
SETTLE_TIMEOUT = 60.0  # for the N-1 (and then N) nodes to see each other before a timing
MEASURE_TIMEOUT = 30.0  # for one timed event

CLONE_NEWNET = 0x40000000
Peers = dict[str, dict[str, Any]]
Predicate = Callable[[NamespacedNode, Peers], bool]


# --- concurrent polling --------------------------------------------------------------------


@dataclass(frozen=True)
class Polling:
    interval: float  # seconds between the starts of two polls of one node
    via: str  # "setns" or "curl"


def enter_netns(netns: str) -> None:
    """Move the calling thread (only it) into a network namespace made by ``ip netns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def fetch_peers(node: NamespacedNode) -> Peers:
    """GET /api/peers over loopback; the calling thread must be in the node's namespace."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=3)
    try:
        conn.request("GET", "/api/peers")
        rsp = conn.getresponse()
        body = rsp.read()
    except OSError as exc:
        raise ConnectionError(f"{node.aet}: GET /api/peers: {exc}") from None
    finally:
        conn.close()
    if rsp.status != 200:
        raise ConnectionError(f"{node.aet}: GET /api/peers: HTTP {rsp.status}")
    return {p["aet"]: p for p in json.loads(body)}


@dataclass
class Hit:
    """The poll that first saw the condition (monotonic seconds)."""

    sent: float  # when that poll was sent
    done: float  # when its answer arrived: the reported time (an upper bound)
    prev_sent: float | None  # when the previous, negative poll was sent (a lower bound)
    peers: Peers


@dataclass
class Watch:
    """One thread per node polls /api/peers until ``predicate`` holds for that node."""

    nodes: Sequence[NamespacedNode]
    predicate: Predicate
    polling: Polling
    hits: dict[str, Hit] = field(default_factory=dict)
    polls: int = 0
    busy: float = 0.0  # summed duration of the polls (ip netns exec + curl round trips)
    gaps: list[float] = field(default_factory=list)  # between successive polls of one node
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Watch:
        for node in self.nodes:
            thread = threading.Thread(
                target=self._poll, args=(node,), name=f"poll-{node.aet}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _poll(self, node: NamespacedNode) -> None:
        fetch: Callable[[], Peers] = node.peers
        if self.polling.via == "setns":
            enter_netns(node.host.netns)  # this thread only; it ends with the poll
            fetch = functools.partial(fetch_peers, node)
        prev_sent: float | None = None
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                peers: Peers | None = fetch()
            except (ConnectionError, ValueError, KeyError, TypeError,
                    subprocess.TimeoutExpired):
                peers = None
            done = time.monotonic()
            with self._lock:
                self.polls += 1
                self.busy += done - sent
                if prev_sent is not None:
                    self.gaps.append(sent - prev_sent)
            if peers is not None and self.predicate(node, peers):
                with self._lock:
                    self.hits[node.aet] = Hit(sent, done, prev_sent, peers)
                return
            prev_sent = sent
            self._stop.wait(max(0.0, self.polling.interval - (done - sent)))

    def wait(self, timeout: float) -> bool:
        """True if the condition held on every node within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stop()
        return len(self.hits) == len(self.nodes)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    @property
    def mean_latency(self) -> float:
        return self.busy / self.polls if self.polls else 0.0


def sees_all_alive(group: Sequence[NamespacedNode]) -> Predicate:
    def check(node: NamespacedNode, peers: Peers) -> bool:
        return all(
            peers.get(other.aet, {}).get("state") == "alive"
            for other in group if other is not node
        )
    return check


def lists_as(aet: str, state: str) -> Predicate:
    def check(node: NamespacedNode, peers: Peers) -> bool:
        return peers.get(aet, {}).get("state") == state
    return check


def answers(node: NamespacedNode, peers: Peers) -> bool:
    return True


def settle(nodes: Sequence[NamespacedNode], polling: Polling, what: str) -> None:
    watch = Watch(nodes, sees_all_alive(nodes), polling).start()
    try:
        done = watch.wait(SETTLE_TIMEOUT)
    finally:
        watch.stop()
    if not done:
        missing = [n.aet for n in nodes if n.aet not in watch.hits]
        raise RuntimeError(f"{what}: {missing} did not see all others alive in "
                           f"{SETTLE_TIMEOUT:.0f} s\n{log_tails(nodes)}")


# --- node logs -----------------------------------------------------------------------------

LOG_TIME = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "


def log_times(node: NamespacedNode, pattern: str) -> list[float]:
    """Wall-clock times of the node's log lines matching ``pattern`` (after the timestamp)."""
    regex = re.compile(LOG_TIME + r".*" + pattern, re.MULTILINE)
    return [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for m in regex.finditer(node.log())
    ]


def first_after(times: list[float], start: float) -> float | None:
    later = [t for t in times if t >= start - 0.01]
    return min(later) if later else None


def log_tails(nodes: Sequence[NamespacedNode], lines: int = 8) -> str:
    out = []
    for node in nodes:
        tail = node.log().splitlines()[-lines:]
        out.append(f"--- {node.aet} ({node.log_path}) ---\n" + "\n".join(tail))
    return "\n".join(out)


# --- one round -----------------------------------------------------------------------------


@dataclass
class Round:
    size: int
    # join: seconds from the spawn of the N-th node's process
    http_up: float | None = None  # its own /api/peers answers (polled)
    found_first: float | None = None  # the first old node lists it alive (polled)
    found_all: float | None = None  # every old node lists it alive (polled)
    found_all_log: float | None = None  # last old node's "(NODEn) at ...: -> alive" log line
    sees_all_log: float | None = None  # the new node's own last "-> alive" log line
    started_log: float | None = None  # its "PACSmesh node ..." line: discovery.start() returned
    # kill: seconds from SIGKILL of an established node
    suspect_all_log: float | None = None  # last survivor's "alive -> suspect" log line
    dead_all: float | None = None  # every survivor lists it dead (polled)
    dead_all_log: float | None = None  # last survivor's "suspect -> dead" log line
    found_sources: list[str] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # between polls of one node
    latencies: list[float] = field(default_factory=list)

    def from_http(self, value: float | None) -> float | None:
        if value is None or self.http_up is None:
            return None
        return value - self.http_up


def last_log_line(nodes: Sequence[NamespacedNode], pattern: str, since: float) -> float | None:
    """Seconds from ``since`` (wall clock) to the latest first match among ``nodes``."""
    times = [first_after(log_times(n, pattern), since) for n in nodes]
    if any(t is None for t in times):
        return None
    return max(t for t in times if t is not None) - since


def run_round(size: int, polling: Polling, work: Path) -> Round:
    result = Round(size)
    live = Liveness()
    with Network() as net:
        hosts = [net.add_host(f"host{i}") for i in range(1, size + 1)]
        # One mesh: node 1 founds it; the others (the late one too) join with a token.
        init_mesh(work / "node1", "NODE1")
        token = invite(work / "node1", f"{hosts[0].address}:11113")
        nodes = [
            NamespacedNode(host, work / f"node{i}", f"NODE{i}",
                           () if i == 1 else ("--join", token))
            for i, host in enumerate(hosts, start=1)
        ]
        old, new = nodes[:-1], nodes[-1]
        watches: list[Watch] = []  # stopped in the finally, also on Ctrl-C
        try:
            for node in old:
                node.start()
            settle(old, polling, f"{size - 1} first nodes")

            # 1. a late node joins
            join = Watch(old, lists_as(new.aet, "alive"), polling)
            own = Watch([new], answers, polling)
            watches += [join, own]
            own.start()
            join.start()
            t0, wall0 = time.monotonic(), time.time()
            new.start()
            own.wait(MEASURE_TIMEOUT)
            join.wait(MEASURE_TIMEOUT)
            for watch in (join, own):
                result.gaps += watch.gaps
                result.latencies.append(watch.mean_latency)
            if own.hits:
                result.http_up = own.hits[new.aet].done - t0
            if join.hits:
                result.found_first = min(h.done for h in join.hits.values()) - t0
            if len(join.hits) == len(old):
                result.found_all = max(h.done for h in join.hits.values()) - t0
                result.found_sources = sorted(
                    "+".join(h.peers[new.aet].get("sources", [])) for h in join.hits.values()
                )
            else:
                print(f"  join timed out:\n{log_tails(nodes)}", flush=True)
            result.found_all_log = last_log_line(
                old, rf"\({new.aet}\) at \S+: \w+ -> alive", wall0)

            # 2. an established node is killed
            settle(nodes, polling, f"all {size} nodes")
            result.started_log = last_log_line([new], rf"PACSmesh node {new.aet}: ", wall0)
            sees = [last_log_line([new], rf"\({o.aet}\) at \S+: \w+ -> alive", wall0)
                    for o in old]
            if all(t is not None for t in sees):
                result.sees_all_log = max(t for t in sees if t is not None)
            victim, survivors = nodes[0], nodes[1:]
            # Logs name a peer by a prefix of its node id: match any prefix length.
            victim_id = re.escape(survivors[0].peers()[victim.aet]["node_id"][:12]) + r"\S*"
            # Settling ends just after some probe succeeded: kill at a random phase instead.
            time.sleep(random.uniform(1.0, 1.0 + live.probe_interval))
            death = Watch(survivors, lists_as(victim.aet, "dead"), polling)
            watches.append(death)
            death.start()
            t0, wall0 = time.monotonic(), time.time()
            victim.kill()
            death.wait(MEASURE_TIMEOUT)
            result.gaps += death.gaps
            result.latencies.append(death.mean_latency)
            if len(death.hits) == len(survivors):
                result.dead_all = max(h.done for h in death.hits.values()) - t0
            else:
                print(f"  death timed out:\n{log_tails(nodes)}", flush=True)
            result.dead_all_log = last_log_line(
                survivors, rf"peer {victim_id}: suspect -> dead", wall0)
            result.suspect_all_log = last_log_line(
                survivors, rf"peer {victim_id}: alive -> suspect", wall0)
        finally:
            for watch in watches:
                watch.stop()
            for node in nodes:
                node.kill()
    return result


# --- report --------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.2f}"


def summarize(values: list[float | None]) -> tuple[str, str, float | None]:
    """Median and max over rounds; a round that timed out makes the max 'timeout'."""
    got = [v for v in values if v is not None]
    if not got:
        return "timeout", "timeout", None
    worst = None if len(got) < len(values) else max(got)
    return f"{statistics.median(got):.2f}", fmt(worst), worst


ROWS: list[tuple[str, Callable[[Round], float | None], float | None]] = [
    ("join: spawn -> own HTTP API answers", lambda r: r.http_up, None),
    ("join: found by all, from spawn", lambda r: r.found_all, FOUND_TARGET),
    ("join: found by first, from HTTP up", lambda r: r.from_http(r.found_first), None),
    ("join: found by all, from HTTP up", lambda r: r.from_http(r.found_all), FOUND_TARGET),
    ("join: found by all, from HTTP up (log)", lambda r: r.from_http(r.found_all_log),
     FOUND_TARGET),
    ("join: new node sees all, from HTTP (log)", lambda r: r.from_http(r.sees_all_log), None),
    ("join: discovery.start() done, fr. HTTP (log)", lambda r: r.from_http(r.started_log),
     None),
    ("kill: suspect on all (log)", lambda r: r.suspect_all_log, None),
    ("kill: dead on all, from SIGKILL", lambda r: r.dead_all, DEAD_TARGET),
    ("kill: dead on all, from SIGKILL (log)", lambda r: r.dead_all_log, DEAD_TARGET),
]


def report(results: dict[int, list[Round]], polling: Polling, rounds: int) -> None:
    live = Liveness()
    interval = polling.interval
    how = ("setns(2) + HTTP over loopback" if polling.via == "setns"
           else "ip netns exec + curl")
    gaps = [g for rs in results.values() for r in rs for g in r.gaps] or [interval]
    latencies = [x for rs in results.values() for r in rs for x in r.latencies] or [0.0]
    print()
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"rounds per size: {rounds}; times in seconds, median and max over rounds")
    print(f"polling: each node's /api/peers by its own thread every {interval * 1000:.0f} ms "
          f"({how}, mean {statistics.mean(latencies) * 1000:.1f} ms each); "
          f"measured period between polls of one node: median "
          f"{statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms. Polled "
          "figures are upper bounds, late by up to one period; (log) rows use the nodes' "
          "own INFO log timestamps (1 ms resolution).")
    print(f"node settings: probe_interval {live.probe_interval} s, probe_timeout "
          f"{live.probe_timeout} s, suspect_after {live.suspect_after} s, dead_after "
          f"{live.dead_after} s, discovery loop {LOOP_INTERVAL} s; the kill happens "
          f"1-{1 + live.probe_interval:.0f} s (random) after all nodes see each other")
    print()
    header = f"{'N':>2}  {'metric':<44} {'median':>7} {'max':>8} {'target':>7}  ok"
    print(header)
    print("-" * len(header))
    for size, rs in results.items():
        for label, get, target in ROWS:
            median, worst, worst_value = summarize([get(r) for r in rs])
            ok = "" if target is None else (
                "yes" if worst_value is not None and worst_value <= target else "NO")
            tgt = "" if target is None else f"{target:.1f}"
            print(f"{size:>2}  {label:<44} {median:>7} {worst:>8} {tgt:>7}  {ok}")
        print()


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or any(s < 2 or s > 250 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be between 2 and 250")
    return sizes


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[3, 8],
                        help="comma-separated mesh sizes (default: 3,8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (default: 3)")
    parser.add_argument("--poll-interval", type=float, default=0.05,
                        help="seconds between polls of one node (default: 0.05)")
    parser.add_argument("--poll-via", choices=("setns", "curl"), default="setns",
                        help="how to reach a node's API in its namespace: a polling thread "
                        "enters it with setns(2) (default, ~1 ms a poll), or ip netns exec "
                        "+ curl each poll (~20 ms and two processes a poll)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.poll_interval <= 0:
        parser.error("--poll-interval must be positive")
    reason = netns_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2

    polling = Polling(args.poll_interval, args.poll_via)
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[int, list[Round]] = {}
    try:
        for size in args.sizes:
            for index in range(1, args.rounds + 1):
                with tempfile.TemporaryDirectory(prefix="pacsmesh-bench-") as tmp:
                    r = run_round(size, polling, Path(tmp))
                results.setdefault(size, []).append(r)
                print(
                    f"N={size} round {index}: http up {fmt(r.http_up)}; found by first/all "
                    f"{fmt(r.found_first)}/{fmt(r.found_all)} from spawn, all "
                    f"{fmt(r.from_http(r.found_all))} from http up "
                    f"(log {fmt(r.from_http(r.found_all_log))}); dead on all "
                    f"{fmt(r.dead_all)} (log {fmt(r.dead_all_log)}); first hint sources: "
                    f"{', '.join(r.found_sources)}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("\ninterrupted: namespaces and node processes removed", file=sys.stderr)
        if results:
            report(results, polling, args.rounds)
        return 130
    report(results, polling, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
