"""Nomad Variables (`/v1/var/:path`) and the env template that renders one into a task's env.

Only the template shape the nomad backend generates is rendered (a `nomadVar` block of
`NAME={{ .NAME | toJSON }}` lines); anything else is refused, so a change of shape is noticed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.nomad_standin.state import Alloc, ApiError, Cluster, now_ns

VAR_PATH = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")
_TEMPLATE_OPEN = re.compile(r'^\{\{ with nomadVar "([^"]+)" \}\}$')
_TEMPLATE_LINE = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*)=\{\{ \.([A-Za-z_][A-Za-z0-9_]*) \| toJSON \}\}$"
)


def parse_env_template(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(variable path, [(env name, item key)]) of the one template shape we render."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[-1] != "{{ end }}" or not _TEMPLATE_OPEN.match(lines[0]):
        raise ApiError(400, "stand-in: only the botfleet nomadVar env template can be rendered")
    path = _TEMPLATE_OPEN.match(lines[0]).group(1)  # type: ignore[union-attr]
    pairs = []
    for line in lines[1:-1]:
        match = _TEMPLATE_LINE.match(line)
        if not match:
            raise ApiError(400, f"stand-in: cannot render template line {line!r}")
        pairs.append((match.group(1), match.group(2)))
    return path, pairs


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as Nomad reads an env template (go-envparse); double quotes are JSON."""
    env = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value.startswith('"'):
            value = json.loads(value)
        env[key.strip()] = value
    return env


#: The most bytes a variable's keys and values may take together (nomad/structs/variables.go,
#: maxVariableSize, counted by `VariableItems.Size`).
MAX_VARIABLE_BYTES = 65536


def handle_variable(
    cluster: Cluster, method: str, ns: str, path: str, body: Any, query: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """PUT, GET or DELETE one variable: (status, answer) with Nomad's shapes. A PUT checks the
    variable's size (400, nomad/variables_endpoint.go `canonicalizeAndValidate`), then `cas`:
    0 creates only, N replaces only the version N; a conflict answers 409 with the variable
    found, items and all (command/agent/variable_endpoint.go `variableUpsert`,
    nomad/state/state_store_variables.go `varSetCASTxn`)."""
    if not VAR_PATH.match(path):
        raise ApiError(400, f"invalid path {path!r}")
    key = (ns, path)
    with cluster.lock:
        current = cluster.variables.get(key)
        if method == "GET":
            if current is None:
                raise ApiError(404, "variable not found")
            return 200, current
        if method == "DELETE":
            cluster.variables.pop(key, None)
            return 200, {"Index": cluster.next_index()}
        if method == "PUT":
            body = body or {}
            if body.get("Path", path) != path:
                raise ApiError(400, "variable path in the body does not match the URL")
            if body.get("Namespace", ns) != ns:
                raise ApiError(400, "variable namespace in the body does not match")
            items = body.get("Items")
            if not items or not all(isinstance(v, str) for v in items.values()):
                raise ApiError(400, "variable missing Items (strings)")
            size = sum(len(k.encode()) + len(v.encode()) for k, v in items.items())
            if size > MAX_VARIABLE_BYTES:
                raise ApiError(400, "variables are limited to 64KiB in total size")
            if query.get("cas") not in (None, ""):
                try:
                    cas = int(query["cas"])
                except ValueError:
                    raise ApiError(400, "can not parse cas") from None
                if (cas == 0 and current is not None) or (
                    cas != 0 and (current is None or current["ModifyIndex"] != cas)
                ):
                    return 409, current or {"Namespace": ns, "Path": path}
            index, now = cluster.next_index(), now_ns()
            variable = {
                "Namespace": ns,
                "Path": path,
                "CreateIndex": current["CreateIndex"] if current else index,
                "ModifyIndex": index,
                "CreateTime": current["CreateTime"] if current else now,
                "ModifyTime": now,
                "Items": dict(items),
            }
            cluster.variables[key] = variable
            return 200, variable
    raise ApiError(405, f"method {method} not allowed")


def render_templates(cluster: Cluster, alloc: Alloc, task_dir: Path) -> dict[str, str]:
    """Write each template into the task dir; the env ones' variables, for the task's env.

    Raises LookupError while the variable is missing (Nomad's template runner blocks).
    """
    env: dict[str, str] = {}
    for template in alloc.task.get("Templates") or []:
        path, pairs = parse_env_template(template["EmbeddedTmpl"])
        variable = cluster.variables.get((alloc.namespace, path))
        if variable is None:
            raise LookupError(f"nomad.var.block({path}@{alloc.namespace}.global)")
        items = variable["Items"]
        text = "".join(f"{name}={json.dumps(items[key])}\n" for name, key in pairs)
        dest = task_dir / template["DestPath"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(int(template.get("Perms") or "0644", 8))
        if template.get("Envvars"):
            env |= parse_env_file(text)
    return env
