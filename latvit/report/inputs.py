"""Reading latvit's result files for `latvit report`: what each file is, judged by its content.

Kinds (`KINDS`), each written by one command:

    bench         `latvit bench --json` ({"format": "latvit-bench/1", "records": [...]}) or `--csv`
    profile       `latvit profile --json` ({"schema": "latvit.profile", "schema_version": 1, ...})
    density       `latvit density --json` ({"schema": "latvit.density", "schema_version": 1, ...})
    lut-validate  `latvit lut validate --json` (the predictor against end-to-end measurements)
    accuracy      `latvit validate --json` (top-1 measured on a dataset)
    search        a `latvit search --output` directory (result.json, trace.json, pareto.json)
    compression   benchmarks/compression.py's JSON (fp32 / ToMe / int8 / sparse variants)

The file's own `format` (or `schema`) field decides where it has one; older files without one are
recognised by their keys. A file that is none of these, is cut short, or carries a format version this
latvit does not read raises a one-line `LatvitError` naming the file and the problem, before any page is
written.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from latvit.errors import LatvitError
from latvit.latency.bench import upgrade_record

KINDS = {
    "bench": "latvit bench records",
    "profile": "latvit profile",
    "density": "latvit density",
    "lut-validate": "latvit lut validate",
    "accuracy": "latvit validate (top-1)",
    "search": "latvit search output",
    "compression": "compression benchmark",
}
# format name -> the version this latvit reads (bench-style "name/version", or schema + schema_version)
FORMAT_VERSIONS = {
    "latvit-bench": 1,
    "latvit.profile": 1,
    "latvit.density": 1,
    "latvit-lut-validate": 1,
    "latvit-compression": 1,
}
FORMAT_KINDS = {
    "latvit-bench": "bench",
    "latvit.profile": "profile",
    "latvit.density": "density",
    "latvit-lut-validate": "lut-validate",
    "latvit-compression": "compression",
}
# bench CSV columns that stay text (every other column is a number, a boolean or empty)
CSV_TEXT_FIELDS = {
    "model",
    "source",
    "runtime",
    "runtime_version",
    "target",
    "status",
    "error",
    "top1_source",
    "cpu",
    "platform",
    "python",
    "torch_version",
    "latvit_version",
    "measured_at",
    "peak_engine",
    "peak_at",
}


@dataclass
class ResultFile:
    """One input of a report.

    name: how the page names it (the path as given, or e.g. "this run").
    kind: a key of `KINDS`.
    data: bench: the list of records (today's fields, `upgrade_record`); search: {"result", "trace",
        "pareto", "settings"} (each None where the directory lacks it); otherwise the parsed JSON object.
    modified: the file's modification time (ISO 8601, UTC), the date of inputs that carry none themselves.
    """

    name: str
    kind: str
    data: Any
    modified: str | None = None


def load_results(paths: list[str | Path]) -> list[ResultFile]:
    """Read every path (see the module docstring); the first bad one raises."""
    if not paths:
        raise LatvitError(
            "give at least one result file (bench JSON/CSV, profile, density, lut validate, "
            "validate or compression JSON, or a search output directory)"
        )
    return [load_result(p) for p in paths]


def bench_result(records: list[dict], name: str = "this run") -> ResultFile:
    """The records of a bench just measured (in memory), as a report input."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ResultFile(name, "bench", _bench_records({"records": records}, name), now)


def load_result(path: str | Path) -> ResultFile:
    """Read one result file or search directory; raises a one-line LatvitError naming `path`."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise LatvitError(f"{name}: no such file or directory")
    modified = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    if path.is_dir():
        return ResultFile(name, "search", _search_dir(path), modified)
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        return ResultFile(name, "bench", _bench_csv(text, name), modified)
    obj = _parse_json(text, name)
    kind = _kind_of(obj, name)
    data = _bench_records(obj, name) if kind == "bench" else _checked(obj, kind, name)
    return ResultFile(name, kind, data, modified)


# -- reading and recognising ------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LatvitError(f"{path}: not a latvit result file (not UTF-8 text)") from None
    except OSError as e:
        raise LatvitError(f"{path}: cannot read it ({e.strerror or e})") from None


def _parse_json(text: str, name: str) -> Any:
    if not text.strip():
        raise LatvitError(f"{name}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()) - 1:  # the parser ran out of text: the writer was cut off
            raise LatvitError(
                f"{name}: truncated JSON (it ends inside a value at line {e.lineno}); re-run the command that wrote it"
            ) from None
        raise LatvitError(
            f"{name}: not a latvit result file (not JSON: {e.msg} at line {e.lineno} column {e.colno})"
        ) from None


def _format_of(obj: dict) -> tuple[str, Any] | None:
    """(format name, version) from a `format: "name/version"` or `schema` + `schema_version` field."""
    fmt = obj.get("format")
    if isinstance(fmt, str):
        name, _, version = fmt.partition("/")
        return name, _int_or_text(version) if version else obj.get("format_version")
    if isinstance(obj.get("schema"), str):
        return obj["schema"], obj.get("schema_version")
    return None


def _int_or_text(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _kind_of(obj: Any, name: str) -> str:
    """The kind of a parsed JSON file, by its format field, else by its keys."""
    if isinstance(obj, list):
        if obj and isinstance(obj[0], dict) and {"latency_ms", "accuracy"} <= set(obj[0]):
            raise LatvitError(f"{name}: a search trace; give the search's output directory instead")
        raise LatvitError(f"{name}: not a latvit result file (a JSON list, not one of latvit's result objects)")
    if not isinstance(obj, dict):
        raise LatvitError(f"{name}: not a latvit result file (a bare JSON value)")
    found = _format_of(obj)
    if found:
        fmt, version = found
        if fmt == "latvit-lut":
            raise LatvitError(
                f"{name}: a latency lookup table, not a result; give the JSON of "
                f"`latvit lut validate --lut {name} --json OUT.json` instead"
            )
        if fmt in FORMAT_VERSIONS:
            if version != FORMAT_VERSIONS[fmt]:
                raise LatvitError(
                    f"{name}: {fmt} format version {version!r}, but this latvit reads version "
                    f"{FORMAT_VERSIONS[fmt]}; open it with the latvit that wrote it, or re-run that "
                    "command with this one"
                )
            return FORMAT_KINDS[fmt]
        if fmt.startswith("latvit"):
            raise LatvitError(
                f"{name}: unknown latvit format '{fmt}' (this latvit reports {', '.join(FORMAT_VERSIONS)})"
            )
        raise LatvitError(f"{name}: not a latvit result file (format '{fmt}')")
    keys = set(obj)
    if {"table", "meta", "rows", "methods"} <= keys:
        return "lut-validate"
    if (
        {"machine", "rows"} <= keys
        and isinstance(obj["rows"], list)
        and all(isinstance(r, dict) and "variant" in r and ("speedup" in r or "error" in r) for r in obj["rows"])
    ):
        return "compression"  # written before compression.py named its format
    if {"model", "data", "top1", "top5"} <= keys:
        return "accuracy"
    if "records" in keys:  # bench records without their format line
        raise LatvitError(f"{name}: bench records without a format field; write them with `latvit bench --json`")
    raise LatvitError(
        f"{name}: not a latvit result file (expected bench, profile, density, lut validate, "
        "validate or compression JSON, or a search output directory)"
    )


# -- what each kind must hold -----------------------------------------------------------------------------
REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {  # kind -> {"": top-level keys, "rows": keys of each row}
    "profile": {
        "": ("model", "runtime", "runtime_version", "img_size", "threads", "e2e", "categories", "blocks"),
        "blocks": ("block", "ms", "categories"),
    },
    "density": {"": ("runtime", "runtime_version", "threads", "rows"), "rows": ("label", "resolution", "error")},
    "lut-validate": {"": ("meta", "rows", "methods"), "rows": ("name", "measured_ms", "predicted_ms", "gflops")},
    "accuracy": {"": ("model", "data", "top1", "img_size")},
    "compression": {"": ("machine", "rows"), "rows": ("model", "runtime", "variant")},
}


def _checked(obj: dict, kind: str, name: str) -> dict:
    """`obj` if it holds every key its kind needs; else the one-line error of a cut or foreign file."""
    need = REQUIRED[kind]
    _require(obj, need[""], name, KINDS[kind])
    for list_key, row_keys in need.items():
        if not list_key:
            continue
        rows = obj[list_key]
        if not isinstance(rows, list):
            raise LatvitError(f"{name}: malformed {KINDS[kind]} file: '{list_key}' is not a list")
        for i, row in enumerate(rows):
            _require(row, row_keys, name, KINDS[kind], f"{list_key}[{i}]")
    if kind == "accuracy" and not _is_number(obj["top1"]):
        raise LatvitError(f"{name}: malformed {KINDS[kind]} file: top1 is not a number")
    return obj


def _require(obj: Any, keys: tuple[str, ...], name: str, what: str, where: str = "") -> None:
    if not isinstance(obj, dict):
        raise LatvitError(f"{name}: malformed {what} file: {where or 'the top level'} is not an object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise LatvitError(
            f"{name}: incomplete {what} file: {where + ' ' if where else ''}lacks "
            f"{', '.join(repr(k) for k in missing)} (truncated, or not written by latvit)"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bench_records(obj: dict, name: str) -> list[dict]:
    """The records of a bench file in today's fields; every record names its model, runtime and status,
    and a measured one its numbers."""
    records = obj.get("records")
    if not isinstance(records, list):
        raise LatvitError(f"{name}: incomplete latvit bench file: 'records' is missing or not a list")
    out = []
    for i, record in enumerate(records):
        _require(record, ("model", "runtime", "status"), name, KINDS["bench"], f"records[{i}]")
        if record["status"] == "ok" and not all(_is_number(record.get(k)) for k in ("median_ms", "batch")):
            raise LatvitError(
                f"{name}: malformed latvit bench file: records[{i}] is 'ok' without a numeric median_ms and batch"
            )
        out.append(upgrade_record(record))
    return out


def _bench_csv(text: str, name: str) -> list[dict]:
    """Records from `latvit bench --csv`: text columns stay text, the others become numbers/booleans/None."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if not {"model", "runtime", "status", "median_ms"} <= set(header):
        raise LatvitError(
            f"{name}: not a latvit result file (a CSV without the bench columns model, runtime, status, median_ms)"
        )
    records = []
    for i, row in enumerate(reader):
        if None in row or any(v is None for v in row.values()):  # too many or too few cells
            raise LatvitError(
                f"{name}: truncated or malformed bench CSV: row {i + 1} has "
                f"{len([v for v in row.values() if v is not None])} of {len(header)} cells"
            )
        records.append(
            {
                k: (v or (None if k != "error" else "")) if k in CSV_TEXT_FIELDS else _csv_value(v)
                for k, v in row.items()
            }
        )  # an empty cell is None, as in JSON (error's default is "")
    return _bench_records({"records": records}, name)


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _search_dir(path: Path) -> dict:
    """result.json, trace.json, pareto.json and settings.json of a `latvit search --output` directory."""
    parts = {}
    for part in ("result", "trace", "pareto", "settings"):
        file = path / f"{part}.json"
        parts[part] = _parse_json(_read_text(file), str(file)) if file.is_file() else None
    if parts["result"] is None and parts["trace"] is None:
        raise LatvitError(f"{path}: a directory, but not a latvit search output (no result.json or trace.json)")
    if parts["result"] is not None:
        _require(
            parts["result"],
            ("method", "space", "target_ms", "predicted_ms", "accuracy_inherited"),
            str(path),
            KINDS["search"],
            "result.json",
        )
    for part in ("trace", "pareto"):
        steps = parts[part]
        if steps is not None:
            if not isinstance(steps, list):
                raise LatvitError(f"{path}: malformed {part}.json (not a list of steps)")
            for i, step in enumerate(steps):
                _require(step, ("latency_ms", "accuracy"), str(path), KINDS["search"], f"{part}.json[{i}]")
    return parts


__all__ = ["FORMAT_VERSIONS", "KINDS", "ResultFile", "bench_result", "load_result", "load_results"]
