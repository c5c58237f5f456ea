"""Configured targets: short names for the devices latvit measures on, kept in one small JSON file.

    latvit target add pi5 ssh://pi@pi5.local --tags arm,pi          # SSH host with Python
    latvit target add pixel8 adb://39021FDH2000TB --runner benchmark_model=./benchmark_model
    latvit target list
    latvit target check pi5

The file is `$XDG_CONFIG_HOME/latvit/targets.json` (default `~/.config/latvit/targets.json`), mode 0600,
replaced atomically (a failed or interrupted write leaves the previous file). It holds names, URLs and
settings, never a password or a key: SSH authenticates with the user's agent and `~/.ssh/config`.

Host keys are checked against the user's `~/.ssh/known_hosts` *and* latvit's own `known_hosts` beside the
target file. `latvit target add ... --accept-new-host-key` records a new host's key in latvit's file only:
latvit never edits the user's SSH files, and `ssh-keygen -R` / deleting latvit's file undoes the trust.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from latvit.errors import LatvitError
from latvit.targets.parsers import RUNNER_RUNTIMES
from latvit.utils import atomic_write_text

FORMAT = "latvit-targets"
FORMAT_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # no spaces, commas, quotes or `;`: names are CLI words
SERIAL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # adb serials: USB ids, emulator-5554, 192.168.1.7:5555
COMPUTE_UNITS = ("cpu", "gpu", "ne", "all")  # CoreML: CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL
DEFAULT_COOLDOWN_S = 2.0  # pause between jobs on a device, so one job's heat does not slow the next


def config_dir() -> Path:
    """latvit's configuration directory: $XDG_CONFIG_HOME/latvit, default ~/.config/latvit."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "latvit"


def targets_file() -> Path:
    return config_dir() / "targets.json"


def latvit_known_hosts() -> Path:
    """latvit's own known_hosts file (OpenSSH format), read beside the user's ~/.ssh/known_hosts."""
    return config_dir() / "known_hosts"


@dataclass(frozen=True)
class Url:
    """A parsed target URL. kind: "local", "ssh" or "adb"; serial only for adb."""

    kind: str
    host: str = ""
    port: int | None = None
    user: str | None = None
    serial: str = ""

    def __str__(self) -> str:
        if self.kind == "ssh":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"ssh://{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"
        return f"adb://{self.serial}" if self.kind == "adb" else "local"


def parse_url(text: str) -> Url:
    """`ssh://[user@]host[:port]`, `adb://SERIAL` or `local`; anything else raises one line with the forms."""
    forms = "use ssh://user@host[:port], adb://SERIAL or local"
    if text == "local":
        return Url("local")
    if text.startswith("adb://"):
        serial = text[len("adb://") :]
        if not SERIAL_RE.match(serial):
            raise LatvitError(
                f"bad adb URL '{text}': the serial (see `adb devices`) has only letters, digits and . _ : -; {forms}"
            )
        return Url("adb", serial=serial)
    if text.startswith("ssh://"):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise LatvitError(f"bad ssh URL '{text}': the port must be a number in 1..65535") from None
        if parts.password is not None:
            raise LatvitError(
                f"bad ssh URL '{text}': latvit stores no passwords; remove it and log in with a key "
                "(ssh-copy-id user@host)"
            )
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise LatvitError(f"bad ssh URL '{text}': {forms}")
        if not re.match(r"^[A-Za-z0-9._:%-]+$", parts.hostname) or (
            parts.username and not re.match(r"^[A-Za-z0-9._-]+$", parts.username)
        ):
            raise LatvitError(f"bad ssh URL '{text}': host and user may hold only letters, digits and . _ - :")
        return Url("ssh", host=parts.hostname, port=port, user=parts.username)
    raise LatvitError(f"bad target URL '{text}'; {forms}")


def check_name(name: str) -> str:
    """A target name: letters, digits, `.`, `_`, `-` (it is split on commas and read from command lines);
    "local" and "tag:..." are taken."""
    if name == "local" or name.startswith("tag:") or not NAME_RE.match(name):
        raise LatvitError(
            f"bad target name {name!r}: use letters, digits, '.', '_' and '-' (up to 64, not "
            "'local'), e.g. `latvit target add pi5 ssh://pi@pi5.local`"
        )
    return name


@dataclass(frozen=True)
class TargetConfig:
    """One configured target.

    python: the device's Python for the SSH agent (default python3 on its PATH);
    tags: groups for `--target tag:NAME` (any free device with that tag);
    workdir: where latvit keeps its agent, artifacts and lock on the device (default: ~/.cache/latvit-target
        over SSH, /data/local/tmp/latvit over adb); one lock per workdir, so keep the default to share it;
    runners: adb only, benchmark binaries on this machine to push once: {"benchmark_model": path, ...};
    compute_units: CoreML's compute units on a Mac ("cpu", "gpu", "ne", "all"; default cpu);
    cooldown_s: pause between jobs on the device.
    """

    name: str
    url: str
    python: str = "python3"
    tags: tuple[str, ...] = ()
    workdir: str | None = None
    runners: dict[str, str] = field(default_factory=dict)
    compute_units: str | None = None
    cooldown_s: float = DEFAULT_COOLDOWN_S

    @property
    def parsed(self) -> Url:
        return parse_url(self.url)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"] = list(self.tags)
        del d["name"]
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> TargetConfig:
        known = {k: d[k] for k in ("url", "python", "workdir", "runners", "compute_units", "cooldown_s") if k in d}
        return cls(name=name, tags=tuple(d.get("tags", ())), **known)


def make_config(
    name: str,
    url: str,
    *,
    python: str | None = None,
    tags: str | list[str] | None = None,
    workdir: str | None = None,
    runners: list[str] | dict[str, str] | None = None,
    compute_units: str | None = None,
    cooldown_s: float | None = None,
) -> TargetConfig:
    """A checked TargetConfig from command-line style values (tags "a,b"; runners ["NAME=PATH", ...])."""
    check_name(name)
    kind = parse_url(url).kind
    if kind == "local":
        raise LatvitError("'local' is built in: measure on this machine with --target local (no need to add it)")
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    for tag in tags or ():
        if not NAME_RE.match(tag):
            raise LatvitError(f"bad tag {tag!r} for target '{name}': use letters, digits, '.', '_' and '-'")
    if compute_units is not None and compute_units not in COMPUTE_UNITS:
        raise LatvitError(
            f"bad --compute-units '{compute_units}' for target '{name}': choose {', '.join(COMPUTE_UNITS)}"
        )
    if cooldown_s is not None and not cooldown_s >= 0:
        raise LatvitError(f"bad --cooldown {cooldown_s} for target '{name}': seconds >= 0")
    runner_paths = _runner_paths(name, kind, runners or {})
    if python is not None and (not python or "\n" in python or "\0" in python):
        raise LatvitError(f"bad --python {python!r} for target '{name}': give the path of the device's Python")
    return TargetConfig(
        name=name,
        url=url,
        python=python or "python3",
        tags=tuple(tags or ()),
        workdir=workdir or None,
        runners=runner_paths,
        compute_units=compute_units,
        cooldown_s=DEFAULT_COOLDOWN_S if cooldown_s is None else float(cooldown_s),
    )


def _runner_paths(name: str, kind: str, runners: list[str] | dict[str, str]) -> dict[str, str]:
    pairs = runners.items() if isinstance(runners, dict) else (r.partition("=")[::2] for r in runners)
    out: dict[str, str] = {}
    for runner, path in pairs:
        if kind != "adb":
            raise LatvitError(
                f"--runner is for adb targets; target '{name}' is {kind} (its agent uses the runtime's Python package)"
            )
        if runner not in RUNNER_RUNTIMES or not path:
            raise LatvitError(
                f"bad --runner '{runner}={path}' for target '{name}': use NAME=PATH with NAME one of "
                f"{', '.join(RUNNER_RUNTIMES)}"
            )
        local = Path(path).expanduser()
        if not local.is_file():
            raise LatvitError(
                f"--runner {runner}: {local} is not a file; build or download the Android binary and give its path"
            )
        out[runner] = str(local.resolve())
    return out


# -- the file ------------------------------------------------------------------------------------------
def load_targets(path: Path | None = None) -> dict[str, TargetConfig]:
    """Every configured target by name ({} when there is no file yet)."""
    path = path or targets_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or not isinstance(data.get("targets"), dict):
            raise ValueError("no 'format: latvit-targets' marker")
        return {name: TargetConfig.from_dict(name, d) for name, d in data["targets"].items()}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise LatvitError(
            f"{path} is not a valid latvit target file ({str(e).splitlines()[0][:120]}); fix it or "
            "delete it and add the targets again"
        ) from None


def save_targets(targets: dict[str, TargetConfig], path: Path | None = None) -> None:
    """Write all targets atomically with mode 0600 (the directory 0700 when latvit creates it)."""
    path = path or targets_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "targets": {name: t.as_dict() for name, t in sorted(targets.items())},
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n", mode=0o600)


def add_target(config: TargetConfig) -> bool:
    """Store `config`; True when it replaced an entry with the same URL. A name taken by another URL raises."""
    targets = load_targets()
    old = targets.get(config.name)
    if old is not None and old.url != config.url:
        raise LatvitError(
            f"target '{config.name}' already points at {old.url}; remove it first "
            f"(`latvit target remove {config.name}`) or choose another name"
        )
    targets[config.name] = config
    save_targets(targets)
    return old is not None


def remove_target(name: str) -> TargetConfig:
    targets = load_targets()
    if name not in targets:
        raise unknown_target(name, targets)
    removed = targets.pop(name)
    save_targets(targets)
    return removed


def get_config(name: str) -> TargetConfig:
    targets = load_targets()
    if name not in targets:
        raise unknown_target(name, targets)
    return targets[name]


def unknown_target(name: str, targets: dict[str, TargetConfig]) -> LatvitError:
    import difflib

    close = difflib.get_close_matches(name, list(targets), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    known = f"configured: {', '.join(sorted(targets))}; " if targets else ""
    return LatvitError(
        f"unknown target '{name}'; {hint}{known}add it with `latvit target add {name} "
        "ssh://user@host` (or adb://SERIAL), or use 'local'"
    )


def tagged(tag: str) -> list[TargetConfig]:
    """The configured targets carrying `tag`, in name order; none raises one line."""
    found = [t for _, t in sorted(load_targets().items()) if tag in t.tags]
    if not found:
        raise LatvitError(f"no target has the tag '{tag}'; add one with `latvit target add NAME URL --tags {tag}`")
    return found


def known_hosts_line(host: str, port: int | None, public_key: str) -> str:
    """An OpenSSH known_hosts line: `host key` on port 22, `[host]:port key` elsewhere."""
    pattern = host if port in (None, 22) else f"[{host}]:{port}"
    return f"{pattern} {public_key.strip()}\n"


def record_host_key(line: str, path: Path | None = None) -> Path:
    """Append a known_hosts line to latvit's file (atomically, mode 0600)."""
    path = path or latvit_known_hosts()
    old = path.read_text() if path.is_file() else ""
    if line in old.splitlines(keepends=True):
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_text(path, old + ("" if not old or old.endswith("\n") else "\n") + line, mode=0o600)
    return path
