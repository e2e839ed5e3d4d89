"""A wheel of the botfleet-runtime this manager runs, for the kinds' virtualenvs (kind_envs.py).

Made from the runtime's importable files and its installed metadata, so it works alike for an
editable checkout, an installed wheel or a source tree, with no build backend and no network
(hatchling is not in the manager's environment, and pip would fetch it). Pure Python, standard
library only: the wheel is the package directories plus METADATA, WHEEL and RECORD. Its bytes
depend on the files alone (fixed timestamps), so its digest names the runtime a kind env holds.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import tempfile
import zipfile
from pathlib import Path

DIST_NAME = "botfleet-runtime"
#: The packages botfleet-runtime ships (runtime/pyproject.toml), found where this manager
#: imports them from.
PACKAGES = ("botfleet.runtime", "bot_runtime")
_EPOCH = (1980, 1, 1, 0, 0, 0)
_WHEEL = "Wheel-Version: 1.0\nGenerator: botfleet\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _package_files(module: str) -> list[tuple[str, Path]]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return []
    top = Path(next(iter(spec.submodule_search_locations)))
    prefix = module.replace(".", "/")
    found = []
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            found.append((f"{prefix}/{rel.as_posix()}", path))
    return found


def _metadata(version: str) -> str:
    try:
        text = importlib.metadata.distribution(DIST_NAME).read_text("METADATA")
    except importlib.metadata.PackageNotFoundError:
        text = None
    return text or f"Metadata-Version: 2.1\nName: {DIST_NAME}\nVersion: {version}\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel() -> tuple[str, bytes]:
    """The runtime's wheel: its file name and its bytes. Raises LookupError when this manager
    cannot import the runtime's packages."""
    files = [item for module in PACKAGES for item in _package_files(module)]
    if not any(name.startswith("botfleet/runtime/") for name, _ in files):
        raise LookupError("botfleet.runtime is not importable by the manager")
    try:
        version = importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        version = "0+local"
    info = f"botfleet_runtime-{version}.dist-info"
    entries = [(name, path.read_bytes()) for name, path in files]
    entries += [
        (f"{info}/METADATA", _metadata(version).encode()),
        (f"{info}/WHEEL", _WHEEL.encode()),
    ]
    record = [_record_line(name, data) for name, data in entries] + [f"{info}/RECORD,,"]
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            member = zipfile.ZipInfo(name, date_time=_EPOCH)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(member, data)
    return f"botfleet_runtime-{version}-py3-none-any.whl", buffer.getvalue()


def write_wheel(directory: Path) -> Path:
    """The runtime's wheel, written once under `directory/<digest>/` (pip wants its real name)."""
    name, data = build_wheel()
    target = directory / hashlib.sha256(data).hexdigest()[:16] / name
    if not target.is_file():
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{name}.", dir=target.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    return target
