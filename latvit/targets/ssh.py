"""SSH targets: a Linux board, a Jetson or a Mac with Python, measured through latvit's agent (asyncssh).

    target = SSHTarget(get_config("pi5"))          # or get_target("pi5") / get_target("ssh://pi@pi5.local")
    result = target.time(TimingJob(artifact, threads=4))

What happens for a job:
1. connect with the user's keys (SSH agent, `~/.ssh/config`, default identities; never a password) and
   check the host key against `~/.ssh/known_hosts` and latvit's own known_hosts (`config.latvit_known_hosts`);
2. ship the agent bundle (`remote.agent_bundle`) once into `WORKDIR/agent/<hash>`, checking every file's
   hash there before it is trusted;
3. ship the artifact once into `WORKDIR/artifacts/<Artifact.sha256>/`, checked by the agent's hash on arrival
   (a cached one is reused: the directory name is its content hash); with `TimingJob.reference`, the
   reference network's artifact for the same runtime too (`reference.reference_file`);
4. run `python agent.py run` with the job as one JSON line on stdin; the agent takes the device lock, cools
   down, loads the artifact with the runtime's own package, times it with `protocol.collect_samples` (or
   `protocol.collect_with_reference`, alternating with the reference network and a numpy GEMM) and prints
   the raw samples; they are checked here as data. With `TimingJob.profile` (ONNX Runtime) it times with
   the runtime's profiler on and sends its per-node events back as well.

Every remote command is an argument list joined with `shlex.join`, so a path or name with spaces, quotes or
`;` stays one argument. Every call has a timeout; a dropped or refused connection is retried with
exponential backoff (`retries`, `backoff_s`), then becomes one `TargetError` line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import posixpath
import secrets
import shlex
import socket
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latvit.errors import first_line, missing_extra
from latvit.runtimes.base import Artifact
from latvit.targets.base import TimingJob, TimingResult
from latvit.targets.config import TargetConfig, known_hosts_line, latvit_known_hosts, parse_url, record_host_key
from latvit.targets.reference import reference_describe, reference_file
from latvit.targets.remote import (
    RUNTIME_PACKAGES,
    RemoteRunError,
    RemoteTarget,
    TargetError,
    agent_bundle,
    artifact_bytes,
    bundle_digest,
    file_sha256,
    job_options,
    parse_answer,
    result_from_answer,
)

DEFAULT_WORKDIR = ".cache/latvit-target"  # relative to the login directory (SFTP and commands both start there)
MIN_PYTHON = (3, 8)
# checks the bundle before the agent is trusted: the device's Python version, then each file's sha256
_CHECK_BUNDLE = (
    "import hashlib, sys\n"
    "print('%d.%d' % sys.version_info[:2])\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        print(hashlib.sha256(open(p, 'rb').read()).hexdigest())\n"
    "    except OSError:\n"
    "        print('missing')\n"
)


def _asyncssh():
    """asyncssh, imported on first use (the `remote` extra); its cryptography deprecation noise silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import asyncssh
    except ImportError:
        raise missing_extra("asyncssh", "remote") from None
    return asyncssh


def user_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


def known_hosts_files() -> list[str]:
    """The known_hosts files a host key is checked against: the user's and latvit's own, those that exist."""
    return [str(p) for p in (user_known_hosts(), latvit_known_hosts()) if p.is_file()]


class _Lost(Exception):
    """The connection ended while a command ran (no exit status came back)."""


class _Overdue(Exception):
    """A whole target call outlived its overall time limit (a backstop behind each step's own timeout)."""


@dataclass
class _Ran:
    """A finished remote command: its exit status, the signal that killed it (or None), its output."""

    status: int
    signal: str | None
    stdout: str
    stderr: str

    def last_error_line(self) -> str:
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""


class _LoopThread:
    """One asyncio loop in a daemon thread: the synchronous Target API submits coroutines to it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="latvit-ssh", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable, timeout: float):
        """The coroutine's result; `_Overdue` when it is still running after `timeout` (then cancelled)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own TimeoutError (e.g. a connect timeout): the caller decides
                raise
            future.cancel()
            raise _Overdue from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SSHTarget(RemoteTarget):
    """A device reached over SSH, timed by latvit's agent with the device's Python (`config.python`).

    retries/backoff_s: a lost or refused connection is retried `retries` times after backoff_s, 2*backoff_s,
        4*backoff_s, ... seconds; connect_timeout_s: per connection attempt; command_timeout_s: per short
        remote command (probe, hash, file copy of a small artifact); lock_wait_s: how long a job waits for
        another workstation's job on the device; on_retry(message): told about each retry (default: stderr).
    """

    kind = "ssh"
    profiles = ("ort",)  # the agent returns ONNX Runtime's per-node profile (latvit.analysis.profile.ort)

    def __init__(
        self,
        config: TargetConfig,
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        connect_timeout_s: float = 15.0,
        command_timeout_s: float = 120.0,
        lock_wait_s: float = 600.0,
        on_retry: Callable[[str], None] | None = None,
    ):
        super().__init__(config)
        if self.url.kind != "ssh":
            raise TargetError(f"target '{self.name}' is {config.url}, not an ssh:// URL")
        self.workdir = config.workdir or DEFAULT_WORKDIR
        self.retries, self.backoff_s = retries, backoff_s
        self.connect_timeout_s, self.command_timeout_s = connect_timeout_s, command_timeout_s
        self.lock_wait_s = lock_wait_s
        self.on_retry = on_retry or (lambda message: print(message, file=sys.stderr))
        self._loop: _LoopThread | None = None
        self._conn = None
        self._bundle_dir: str | None = None
        self._arrived: set[str] = set()  # artifact paths checked on the device during this connection
        self._busy = threading.Lock()  # one call at a time through this object

    # -- the public surface -------------------------------------------------------------------------------
    def probe_device(self) -> dict[str, Any]:
        return self._with_retries("probe", self._probe_async, self.connect_timeout_s + 2 * self.command_timeout_s)

    def runner_version(self, runtime: str) -> str | None:
        probe = self.probe()
        installed = probe.get("packages", {})
        package = next((p for p in RUNTIME_PACKAGES.get(runtime, ()) if p in installed), None)
        if package is not None:
            return f"{package} {installed[package]}"
        if runtime.startswith("tensorrt") and probe.get("trtexec"):
            return "trtexec"
        return None

    def _check_runtime(self, runtime: str) -> None:
        """Refuse before copying anything when the device's Python lacks the job's runtime."""
        if runtime in RUNTIME_PACKAGES and self.runner_version(runtime) is None:
            package = RUNTIME_PACKAGES[runtime][0]
            raise TargetError(
                f"target '{self.name}': {package} is not installed for {self.config.python} on the "
                f"device: pip install {package} there (or point --python at a Python that has it)"
            )

    def time(self, job: TimingJob) -> TimingResult:
        if job.artifact.path is None:
            raise RemoteRunError(
                f"a {job.artifact.runtime} job has no artifact file; only 'local' times "
                "in-process runtimes (eager, inductor)"
            )
        sha = job.artifact.sha256()
        protocol = job.protocol.as_kwargs()
        timeout = (
            self.connect_timeout_s
            + 3 * self.command_timeout_s
            + self.lock_wait_s
            + self.config.cooldown_s
            + protocol["max_seconds"]
            + 600
            + artifact_bytes(job.artifact.path) / 1e6
        )  # load + warm-up + copy
        return self._with_retries("time", lambda: self._time_async(job, sha, timeout), timeout + 30)

    def close(self) -> None:
        if self._loop is not None:
            if self._conn is not None:
                try:
                    self._loop.run(self._close_async(), 10)
                except Exception:  # noqa: BLE001 - closing a dead connection may fail in any way
                    pass
            self._loop.stop()
        self._loop, self._conn, self._bundle_dir = None, None, None
        self._arrived.clear()

    # -- retries and error lines ---------------------------------------------------------------------------
    def _with_retries(self, what: str, make: Callable[[], Awaitable], timeout: float):
        """Run the coroutine `make()` on the loop; a connection problem closes the connection and retries with
        backoff, then raises one TargetError line. Errors the user must fix are raised at once."""
        with self._busy:
            for attempt in range(self.retries + 1):
                if self._loop is None:
                    self._loop = _LoopThread()
                try:
                    return self._loop.run(make(), timeout)
                except _Overdue:
                    self._drop()
                    raise RemoteRunError(
                        f"target '{self.name}': the {what} call timed out after {timeout:.0f} s "
                        "(the job was stopped on the device)"
                    ) from None
                except Exception as e:  # noqa: BLE001 - classified below: fatal ones are raised, others retried
                    reason = self._fatal_or_reason(e)
                self._drop()
                if attempt == self.retries:
                    tries = f"gave up after {self.retries + 1} tries: " if self.retries else ""
                    raise TargetError(
                        f"target '{self.name}' ({self.url}): {reason}; {tries}check that the device "
                        f"is on and reachable (`latvit target check {self.name}`)"
                    )
                delay = self.backoff_s * 2**attempt
                self.on_retry(
                    f"latvit: target '{self.name}': {reason}; retrying in {delay:g} s ({attempt + 1}/{self.retries})"
                )
                threading.Event().wait(delay)

    def _fatal_or_reason(self, e: BaseException) -> str:
        """Raise a TargetError for what retrying cannot fix; return the retryable reason otherwise."""
        asyncssh = _asyncssh()
        if isinstance(e, (TargetError, RemoteRunError)):
            raise e
        if isinstance(e, asyncssh.HostKeyNotVerifiable):
            raise TargetError(
                f"target '{self.name}': the host key of {self.url.host} is not trusted (unknown, or "
                "changed); if you trust the device, run `latvit target add "
                f"{self.name} {self.url} --accept-new-host-key`"
            ) from None
        if isinstance(e, asyncssh.PermissionDenied):
            who = f"{self.url.user}@{self.url.host}" if self.url.user else self.url.host
            raise TargetError(
                f"target '{self.name}': {who} refused the key (permission denied): add your public "
                f"key on the device (`ssh-copy-id {who}`) or load it into your SSH agent "
                "(`ssh-add`)"
            ) from None
        if isinstance(e, (asyncssh.KeyImportError, asyncssh.ConfigParseError)):
            raise TargetError(
                f"target '{self.name}': cannot read your SSH keys or ~/.ssh/config ({first_line(e)}): "
                "fix that file (latvit uses the same keys and config as `ssh`)"
            ) from None
        if isinstance(e, socket.gaierror):
            raise TargetError(
                f"target '{self.name}': cannot resolve host '{self.url.host}' ({first_line(e)}): fix "
                f"the URL (`latvit target remove {self.name}` and add it again)"
            ) from None
        if isinstance(e, asyncssh.SFTPError):
            raise TargetError(
                f"target '{self.name}': copying to {self.workdir} on the device failed "
                f"({first_line(e)}): check its free space and permissions, or set another "
                "--workdir"
            ) from None
        if isinstance(e, (_Lost, OSError, asyncio.TimeoutError, asyncssh.Error)):
            return f"connection failed ({first_line(e)})" if str(e) else f"connection failed ({type(e).__name__})"
        raise e

    def _drop(self) -> None:
        """Forget the connection after a failure (the next attempt reconnects)."""
        conn, self._conn, self._bundle_dir = self._conn, None, None
        self._arrived.clear()
        if conn is not None and self._loop is not None:
            self._loop.loop.call_soon_threadsafe(conn.abort)

    # -- coroutines (run on the loop thread) ---------------------------------------------------------------
    async def _connection(self):
        asyncssh = _asyncssh()
        if self._conn is None:
            kwargs: dict[str, Any] = {
                "known_hosts": known_hosts_files() or ([], [], []),
                "password_auth": False,
                "kbdint_auth": False,
                "keepalive_interval": 15,
                "keepalive_count_max": 3,
            }
            if self.url.port:
                kwargs["port"] = self.url.port
            if self.url.user:
                kwargs["username"] = self.url.user
            self._conn = await asyncio.wait_for(asyncssh.connect(self.url.host, **kwargs), self.connect_timeout_s)
        return self._conn

    async def _close_async(self) -> None:
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()

    async def _exec(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> _Ran:
        """Run `argv` on the device as one shell-quoted command. With `stdin`, it is written and stdin stays
        open (the agent stops when it closes); a run past `timeout` is stopped and raises RemoteRunError."""
        conn = await self._connection()
        proc = await conn.create_process(shlex.join(argv), encoding="utf-8", errors="replace")
        if stdin is not None:
            proc.stdin.write(stdin)
        else:
            proc.stdin.write_eof()
        limit = timeout or self.command_timeout_s
        try:
            stdout, stderr = await asyncio.wait_for(asyncio.gather(proc.stdout.read(), proc.stderr.read()), limit)
            await asyncio.wait_for(proc.wait_closed(), 30)
        except asyncio.TimeoutError:
            proc.close()  # the channel ends: the agent sees stdin close and exits, freeing the device lock
            raise RemoteRunError(
                f"target '{self.name}': a remote command timed out after {limit:.0f} s on the device (stopped)"
            ) from None
        if proc.exit_status is None and proc.exit_signal is None:
            raise _Lost("the connection dropped during a remote command")
        signal = proc.exit_signal[0] if proc.exit_signal else None
        return _Ran(proc.exit_status if proc.exit_status is not None else -1, signal, stdout, stderr)

    async def _ensure_bundle(self) -> str:
        """The agent bundle's directory on the device, shipped and checked by hash when not there yet."""
        files = agent_bundle()
        dest = posixpath.join(self.workdir, "agent", bundle_digest(files)[:16])
        if self._bundle_dir == dest:
            return dest
        if await self._bundle_ok(dest, files):
            self._bundle_dir = dest
            return dest
        asyncssh = _asyncssh()
        incoming = f"{dest}.incoming-{secrets.token_hex(4)}"
        async with (await self._connection()).start_sftp_client() as sftp:
            for name, data in files.items():
                path = posixpath.join(incoming, name)
                await sftp.makedirs(posixpath.dirname(path), exist_ok=True)
                async with sftp.open(path, "wb") as f:
                    await f.write(data)
            if not await self._bundle_ok(incoming, files):
                await sftp.rmtree(incoming, ignore_errors=True)
                raise TargetError(
                    f"target '{self.name}': latvit's agent arrived corrupted on the device (hash "
                    "mismatch): check the device's disk and retry"
                )
            if await sftp.exists(dest):  # a previous, damaged copy
                await sftp.rmtree(dest, ignore_errors=True)
            try:
                await sftp.rename(incoming, dest)
            except asyncssh.SFTPError:
                if not await self._bundle_ok(dest, files):  # another workstation did not just install it
                    raise
                await sftp.rmtree(incoming, ignore_errors=True)
        self._bundle_dir = dest
        return dest

    async def _bundle_ok(self, directory: str, files: dict[str, bytes]) -> bool:
        """Whether every bundle file under `directory` has its hash (checked with the device's Python)."""
        names = sorted(files)
        paths = [posixpath.join(directory, n) for n in names]
        ran = await self._exec([self.config.python, "-c", _CHECK_BUNDLE, *paths])
        lines = ran.stdout.split()
        if ran.status == 127 or not lines or not lines[0].replace(".", "").isdigit():
            raise TargetError(
                f"target '{self.name}': no Python at '{self.config.python}' on the device "
                f"({ran.last_error_line() or 'exit status ' + str(ran.status)}): install python3 "
                f"there, or give its path with `latvit target add {self.name} {self.url} --python PATH`"
            )
        version = tuple(int(v) for v in lines[0].split("."))
        if version < MIN_PYTHON:
            raise TargetError(
                f"target '{self.name}': Python {lines[0]} at '{self.config.python}' is too old (the "
                f"agent needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+): pass a newer one with --python PATH"
            )
        return lines[1:] == [file_sha256(files[n]) for n in names]

    async def _agent(self, *args: str, stdin: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Run the agent with `args`; its answer (a JSON object). A crash is a RemoteRunError with the reason."""
        bundle = await self._ensure_bundle()
        ran = await self._exec(
            [self.config.python, posixpath.join(bundle, "agent.py"), *args], stdin=stdin, timeout=timeout
        )
        if ran.signal is not None or ran.status != 0 or not ran.stdout.strip():
            how = f"killed by signal {ran.signal}" if ran.signal else f"exit status {ran.status}"
            detail = ran.last_error_line()
            raise RemoteRunError(
                f"target '{self.name}': the runner crashed on the device ({how}){': ' + detail if detail else ''}"
            )
        return parse_answer(ran.stdout, self.name)

    async def _probe_async(self) -> dict[str, Any]:
        return await self._agent("probe", self.workdir)

    async def _ensure_artifact(self, path: Path, sha: str) -> str:
        """The artifact's path on the device: `WORKDIR/artifacts/SHA/NAME`, copied and checked by hash on
        arrival when it is not there yet."""
        dest_dir = posixpath.join(self.workdir, "artifacts", sha)
        dest = posixpath.join(dest_dir, path.name)
        if dest in self._arrived:
            return dest
        asyncssh = _asyncssh()
        async with (await self._connection()).start_sftp_client() as sftp:
            if not await sftp.exists(dest):
                self._check_space(path)
                incoming = f"{dest_dir}.incoming-{secrets.token_hex(4)}"
                await sftp.makedirs(incoming, exist_ok=True)
                await sftp.put(str(path), posixpath.join(incoming, path.name), recurse=path.is_dir())
                arrived = await self._agent("hash", posixpath.join(incoming, path.name))
                if arrived.get("sha256") != sha:
                    await sftp.rmtree(incoming, ignore_errors=True)
                    raise RemoteRunError(
                        f"target '{self.name}': {path.name} arrived corrupted on the device (hash mismatch); retry"
                    )
                try:
                    await sftp.rename(incoming, dest_dir)
                except asyncssh.SFTPError:
                    if not await sftp.exists(dest):
                        raise
                    await sftp.rmtree(incoming, ignore_errors=True)  # another workstation shipped it meanwhile
        self._arrived.add(dest)
        return dest

    def _check_space(self, path: Path) -> None:
        """Refuse an artifact the device has no room for (runs on the loop: reads the probe already made)."""
        free = (self._probe or {}).get("free_bytes")
        need = artifact_bytes(path) + (1 << 20)
        if free is not None and free < need:
            raise TargetError(
                f"target '{self.name}': not enough disk space in {self.workdir} on the device "
                f"({free / 1e6:.1f} MB free, {need / 1e6:.1f} MB needed): free some space there or "
                f"set another --workdir"
            )

    async def _time_async(self, job: TimingJob, sha: str, timeout: float) -> TimingResult:
        if self._probe is None:  # probed here, on the loop: the methods below only read it (no nested calls)
            self._probe = await self._probe_async()
        self._check_runtime(job.artifact.runtime)
        path = await self._ensure_artifact(job.artifact.path, sha)
        spec = {
            "workdir": self.workdir,
            "artifact": path,
            "runtime": job.artifact.runtime,
            "input_shape": list(job.artifact.input_shape),
            "threads": job.threads,
            "protocol": job.protocol.as_kwargs(),
            "sessions": job.protocol.sessions,
            "options": job_options(job, self.config),
            "lock_wait_s": self.lock_wait_s,
            "cooldown_s": self.config.cooldown_s,
            "timeout_s": timeout,
        }
        if job.profile:
            if job.artifact.runtime not in self.profiles:
                raise RemoteRunError(
                    f"target '{self.name}': per-op profiles on a device are taken with "
                    f"{', '.join(self.profiles)}, not {job.artifact.runtime}"
                )
            spec["profile"] = True
        reference = None
        if job.reference and not job.profile:
            made = reference_file(job.artifact.runtime)  # None: an in-process runtime, which only local times
            if made is not None:
                ref_path, ref_shape = made
                ref_sha = Artifact(job.artifact.runtime, ref_path, ref_shape).sha256()
                ref_on_device = await self._ensure_artifact(ref_path, ref_sha)
                spec["reference"] = {"artifact": ref_on_device, "input_shape": list(ref_shape)}
                reference = reference_describe(job.artifact.runtime, job.threads)
        answer = await self._agent("run", stdin=json.dumps(spec) + "\n", timeout=timeout)
        if not answer["ok"]:
            reason = answer.get("reason")
            if reason == "missing_runtime":
                raise TargetError(
                    f"target '{self.name}': {answer.get('error')} (on the device; or point --python "
                    "at a Python that has it)"
                )
            raise RemoteRunError(f"target '{self.name}': {str(answer.get('error'))[:400]}")
        result = result_from_answer(answer, self.name, self.fingerprint(), reference)
        result.protocol = job.protocol
        return result


# -- trusting a new host ---------------------------------------------------------------------------------
def accept_new_host_key(url: str, timeout_s: float = 15.0) -> tuple[str, str]:
    """Record the host key of a host no known_hosts file knows yet in latvit's known_hosts; returns
    (what happened: "recorded" or "known", the key's SHA256 fingerprint). A host whose known key differs
    (a changed key) is refused: that is what the check exists to catch."""
    parsed = parse_url(url)
    asyncssh = _asyncssh()
    port = parsed.port or 22

    async def fetch():
        return await asyncio.wait_for(asyncssh.get_server_host_key(parsed.host, port), timeout_s)

    try:
        key = asyncio.run(fetch())
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as e:
        raise TargetError(
            f"cannot reach {parsed.host}:{port} to read its host key ({first_line(e)}): check the "
            "URL and that the device is on"
        ) from None
    if key is None:
        raise TargetError(f"{parsed.host}:{port} presented no host key")
    public = key.export_public_key().decode().strip()
    fingerprint = key.get_fingerprint()
    files = known_hosts_files()
    trusted = asyncssh.match_known_hosts(files, parsed.host, "", None if port == 22 else port)[0] if files else []
    if any(k.public_data == key.public_data for k in trusted):
        return "known", fingerprint
    if trusted:
        raise TargetError(
            f"the host key of {parsed.host}:{port} CHANGED ({fingerprint} now): if the device was "
            f"reinstalled, remove the old key (`ssh-keygen -R {parsed.host}`, and its line in "
            f"{latvit_known_hosts()}) and run this again; otherwise do not connect"
        )
    record_host_key(known_hosts_line(parsed.host, port, public))
    return "recorded", fingerprint
