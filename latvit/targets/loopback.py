"""A throwaway SSH "device" on this machine: for trying targets out, the tests and the loopback benchmark.

    python -m latvit.targets.loopback /tmp/lb      # starts it, prints the commands to use it, Ctrl-C stops it

`LoopbackDevice` runs an unprivileged OpenSSH server (Debian: `apt-get install openssh-server`) on 127.0.0.1 and
a free port: its own host key, its own authorized_keys holding a fresh client key, key authentication only,
StrictModes and PAM off, its pid file and log in its directory. The client side is a HOME of its own whose
`~/.ssh/config` names that key, so latvit reaches it exactly as it reaches a real device (keys from
`~/.ssh/config`, host key checked). `device_python` builds a separate virtual environment with only the
runtime installed (no torch, no latvit), the device's Python.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in SSHD_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_key(path: Path) -> str:
    """A new ed25519 private key at `path` (OpenSSH format, 0600); returns its public key line."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return key.export_public_key().decode().strip()


def _descendants(pid: int) -> list[int]:
    """`pid`'s child processes, recursively (Linux /proc), children before their parents."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: list[int] = []

    def walk(p: int) -> None:
        for c in children.get(p, []):
            walk(c)
            out.append(c)

    walk(pid)
    return out


class LoopbackDevice:
    """An sshd on 127.0.0.1 under `root` (see the module docstring). `url` is its ssh:// URL; `client_env()`
    the environment (HOME, no SSH agent) in which latvit uses its key."""

    def __init__(self, root: str | Path, port: int | None = None):
        self.root = Path(root).absolute()
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.home = self.root / "client-home"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "SSH_AUTH_SOCK": ""}

    def _configure(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        host_key, client_key = self.root / "host_ed25519", self.root / "client_ed25519"
        if not host_key.exists():
            _write_key(host_key)
        if not client_key.exists():
            (self.root / "authorized_keys").write_text(_write_key(client_key) + "\n")
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        (ssh / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {client_key}\n  IdentitiesOnly yes\n")
        config = self.root / "sshd_config"
        sftp = next(
            (p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server") if os.path.exists(p)),
            "internal-sftp",
        )
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"Subsystem sftp {sftp}",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        return config

    def start(self) -> LoopbackDevice:
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("sshd is not installed (Debian: apt-get install openssh-server)")
        config = self._configure()
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        log = open(self.root / "sshd.log", "ab")
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited at once: {(self.root / 'sshd.log').read_text()[-300:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        """Kill sshd and every session it started (what a crashed or unplugged device looks like)."""
        if self.proc is None:
            return
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> LoopbackDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def device_python(packages: list[str], cache: str | Path | None = None) -> Path:
    """The Python of a virtual environment holding only `packages` (and pip), built once and cached by the
    package list (default under the temp directory). Raises RuntimeError with pip's last line if it cannot
    be built (no network, no wheel for this Python)."""
    import fcntl
    import tempfile

    key = hashlib.sha256(" ".join(sorted(packages)).encode()).hexdigest()[:12]
    root = Path(cache or Path(tempfile.gettempdir()) / f"latvit-device-venv-{key}")
    python = root / "bin" / "python"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions build it once
        if (root / ".complete").exists():
            return python
        shutil.rmtree(root, ignore_errors=True)
        for argv in (
            [sys.executable, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
        ):
            ran = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if ran.returncode != 0:
                lines = [ln for ln in (ran.stderr + ran.stdout).splitlines() if ln.strip()]
                raise RuntimeError(
                    f"cannot build the device environment ({' '.join(argv[:3])}...): "
                    f"{lines[-1] if lines else 'exit ' + str(ran.returncode)}"
                )
        (root / ".complete").write_text("\n".join(packages) + "\n")
    return python


def main(argv: list[str]) -> int:
    """Start a loopback device under argv[1] and print how to use it; Ctrl-C stops it."""
    root = Path(argv[1] if len(argv) > 1 else "latvit-loopback")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop sshd on `kill` too, not only on Ctrl-C
    python = device_python(["numpy", "onnxruntime"])
    with LoopbackDevice(root) as device:
        env = " ".join(f"{k}={v!r}" for k, v in device.client_env().items())
        print(
            f"loopback device on {device.url} (its Python: {python}); in another shell:\n"
            f"  export {env}\n"
            f"  latvit target add loopback {device.url} --python {python} --workdir {root / 'device'} "
            "--accept-new-host-key\n"
            "  latvit target check loopback\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            device.proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
