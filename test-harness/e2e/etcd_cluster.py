"""A real 3-member etcd cluster on loopback ports (Debian's etcd-server, installed by
scripts/setup), for the end-to-end tests of the shared state store (docs/state.md).

Members can be killed and started again with their data, so a test can watch the filter through
one member lost, every member lost, and the cluster coming back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import portcullis_e2e as pe


def etcd_binary() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if not found:
        raise pe.E2EError("etcd is not installed (scripts/setup installs Debian's etcd-server)")
    return found


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data: Path
    proc: pe.Proc | None = None


@dataclass
class EtcdCluster:
    stack: pe.Stack
    dir: Path
    members: list[Member] = field(default_factory=list)

    @classmethod
    def create(cls, stack: pe.Stack, size: int = 3) -> EtcdCluster:
        c = cls(stack, stack.dir / "etcd")
        for i in range(size):
            c.members.append(Member(f"m{i}", pe.free_port(), pe.free_port(), c.dir / f"m{i}"))
        for m in c.members:
            c.start(m)
        for m in c.members:
            c.wait_healthy(m)
        return c

    @property
    def client_ports(self) -> list[int]:
        return [m.client_port for m in self.members]

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    def start(self, m: Member) -> None:
        argv = [
            etcd_binary(), "--name", m.name, "--data-dir", str(m.data),
            "--listen-client-urls", f"http://127.0.0.1:{m.client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{m.client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-token", f"portcullis-e2e-{self.dir.name}",
            "--initial-cluster-state", "new",
            # Loopback: short heartbeats so a lost leader is replaced quickly.
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        m.proc = self.stack.start(f"etcd-{m.name}", argv)

    def wait_healthy(self, m: Member, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            status, body = pe.http_get(f"http://127.0.0.1:{m.client_port}/health")
            return status == 200 and b'"true"' in body
        pe.wait_until(f"etcd member {m.name} healthy", healthy, m.proc, timeout)

    def kill(self, m: Member) -> None:
        if m.proc is not None:
            m.proc.stop(timeout=2.0)
            m.proc = None

    def restart(self, m: Member) -> None:
        self.kill(m)
        self.start(m)
