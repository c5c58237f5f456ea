"""Child side of `latvit.targets.protocol.run_isolated`: `python -m latvit.targets.worker REQUEST.json`.

Imports the requested function, calls it with the request's kwargs and writes {"ok": true, "value": ...}
or {"ok": false, "error": "..."} to the request's result path. A user-fixable `LatvitError` is reported
as its message; any other exception as its type and message (its traceback goes to stderr).
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

from latvit.errors import LatvitError, first_line
from latvit.utils import atomic_write_text


def resolve_function(target: str):
    """ "package.module:function" -> the function (imports the module)."""
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    try:
        function = resolve_function(request["target"])
        if request.get("threads") and "torch" in sys.modules:  # the env set OpenMP's pool; torch's too
            sys.modules["torch"].set_num_threads(request["threads"])
        value = function(**request["kwargs"])
        payload = {"ok": True, "value": value}
    except LatvitError as e:
        payload = {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - the parent turns any failure into a failed record
        traceback.print_exc()
        payload = {"ok": False, "error": first_line(e, 1000)}
    atomic_write_text(Path(request["result"]), json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
