"""The systemd unit of the service (``outpost service enable-on-boot``; written and
enabled by ``outpost.systemd_units``)."""

from __future__ import annotations

import sys
from pathlib import Path

UNIT_NAME = "outpost-service.service"

HARDENING = """\
# Hardening: the service needs its data directory and the network, nothing else.
NoNewPrivileges=yes
UMask=0077
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={data_dir}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
"""


def unit_text(
    data_dir: Path,
    user: str,
    group: str | None = None,
    config_file: Path | None = None,
    port: int | None = None,
) -> str:
    """The unit. Settings come from ``config_file`` (keep secrets there, mode 0600), so
    that none is in the unit, the process list or the environment."""
    cmd = [sys.executable, "-m", "outpost", "service", "start"]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    caps = "CAP_NET_BIND_SERVICE" if port is not None and port < 1024 else ""
    lines = [
        "[Unit]",
        "Description=Outpost function-as-a-service (REST API, endpoint channels)",
        "Documentation=file://" + str(Path(__file__).resolve().parents[2] / "docs"),
        "After=network-online.target postgresql.service rabbitmq-server.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={user}",
        f"Group={group or user}",
        f"Environment=OUTPOST_DATA_DIR={data_dir}",
        "ExecStart=" + " ".join(cmd),
        "Restart=on-failure",
        "RestartSec=5",
        "# SIGTERM: close endpoint channels, finish writes; then SIGKILL after 30 s.",
        "TimeoutStopSec=30",
        "LimitNOFILE=65536",
    ]
    return (
        "\n".join(lines)
        + "\n"
        + HARDENING.format(data_dir=data_dir, caps=caps)
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )

