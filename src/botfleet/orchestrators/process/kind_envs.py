"""A virtualenv per bot kind and version, for kinds that bring their own Python package.

The process backend runs such a kind's bots with `<env>/bin/python -m botfleet.runtime`
(`LaunchSpec.python`), so a team's package and its requirements never enter the manager's own
environment. Each env holds the botfleet-runtime this manager runs (runtime_wheel.py) plus the
kind's `{"wheels": [paths or URLs]}` and/or `{"requirements": [...]}`.

- Built with the manager's interpreter's `venv` module and the env's own pip (`--no-input`,
  `--no-cache-dir`), in an environment holding the manager's proxy and pip settings, never its
  secrets; pip may reach the package index for the kind's requirements.
- Built in a temporary directory beside the final one and renamed into place once complete and
  checked: a half-built env is never used. Console scripts are re-pointed at the final path.
- Cached: `ensure` of a built env is a stat. The directory name carries a digest of the package
  and of the runtime's wheel, so a changed runtime gets a new env (bots on the old one keep it).
- Concurrent `ensure`s of one env (threads or managers) build it once: a lock file (flock).
- Bounded: the whole build is killed after `timeout_s`, and stopped and removed once over
  `max_mb`; either is a `KindEnvFailed` (code `kind_env_failed`) with the tail of pip's output.
- Readable by the bots' uids, writable by nobody but the manager: directories 0755, files 0644
  or 0755, owned by the manager's user (root when bots have uids of their own).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from botfleet.orchestrators.base import KindEnvFailed
from botfleet.orchestrators.process import runtime_wheel
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig

#: Written last into a complete env: what it holds and when it was built.
MARKER = ".botfleet-kind-env.json"
DEFAULT_ROOT = Path("/var/lib/botfleet/kind-envs")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URL = re.compile(r"(https?|file)://", re.IGNORECASE)
_TAIL_CHARS = 3000
_POLL_S = 0.5
#: What pip sees of the manager's environment besides PIP_*: how to reach the index.
_PASSED_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
)  # fmt: skip
_PIP_INSTALL = (
    "-m", "pip", "install", "--no-input", "--no-cache-dir", "--disable-pip-version-check",
)  # fmt: skip
#: pip settings that would install somewhere else than the env.
_DROPPED_PIP = {"PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV"}


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
    env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_") and k not in _DROPPED_PIP}
    return env | {
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONNOUSERSITE": "1",
    }


def _size_mb(path: Path) -> float:
    """Disk used under `path` (its blocks, symlinks not followed)."""
    used = 0
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            with suppress(OSError):
                used += os.lstat(os.path.join(top, name)).st_blocks * 512
    return used / (1024 * 1024)


def _tail(out: IO[bytes]) -> str:
    out.flush()
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - _TAIL_CHARS))
    return out.read().decode(errors="replace").strip()


def _install_args(package: Mapping[str, Any]) -> list[str]:
    """pip's arguments for the kind's package; KindEnvFailed for a shape pip must not see."""
    unknown = set(package) - {"wheels", "requirements"}
    if unknown:
        raise KindEnvFailed(f"package: unknown keys {sorted(unknown)} (wheels, requirements)")
    args: list[str] = []
    for key in ("wheels", "requirements"):
        items = package.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise KindEnvFailed(f"package.{key}: a list of non-empty strings")
        for item in items:
            if item.startswith("-"):  # a requirement, never an option of pip's
                raise KindEnvFailed(f"package.{key}: {item!r} is not a requirement")
            if key == "wheels" and not (_URL.match(item) or os.path.isabs(item)):
                raise KindEnvFailed(f"package.wheels: {item!r} is not an absolute path or URL")
        args += items
    if not args:
        raise KindEnvFailed("package: no wheels and no requirements to install")
    return args


class KindEnvs:
    """The kinds' virtualenvs under `root`; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        timeout_s: float = 300,
        max_mb: int = 1024,
        runtime_source: str | Path | None = None,
    ) -> None:
        """`runtime_source`: what pip installs as botfleet-runtime (a wheel's path or URL, a
        requirement); None: a wheel of the runtime this manager runs, made once."""
        self.root = root
        self.timeout_s = timeout_s
        self.max_mb = max_mb
        self._runtime_source = runtime_source
        self._runtime: str | None = None

    @classmethod
    def from_config(cls, config: ProcessOrchestratorConfig) -> KindEnvs:
        root = config.kind_env_root
        if root is None:
            root = DEFAULT_ROOT if os.geteuid() == 0 else config.data_dir / "kind-envs"
        return cls(root, timeout_s=config.kind_env_timeout_s, max_mb=config.kind_env_max_mb)

    def runtime(self) -> str:
        """What pip installs as botfleet-runtime (made on first use)."""
        if self._runtime is None:
            if self._runtime_source is not None:
                self._runtime = str(self._runtime_source)
            else:
                self._prepare_root()
                try:
                    wheel = runtime_wheel.write_wheel(self.root / ".runtime")
                except (LookupError, OSError) as exc:
                    raise KindEnvFailed(f"cannot make the botfleet-runtime wheel: {exc}") from exc
                self._runtime = str(wheel)
        return self._runtime

    def path(self, name: str, version: int, package: Mapping[str, Any]) -> Path:
        """The env's directory (built or not): `<root>/<name>-<version>-<digest>`."""
        if not _NAME.fullmatch(name) or isinstance(version, bool) or not isinstance(version, int):
            raise KindEnvFailed(f"not a kind name and version: {name!r} {version!r}")
        _install_args(package)
        runtime = self.runtime()
        runtime_id = Path(runtime).parent.name if os.path.isfile(runtime) else runtime
        key = json.dumps({"package": package, "runtime": runtime_id}, sort_keys=True)
        return self.root / f"{name}-{version}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def ready(self, name: str, version: int, package: Mapping[str, Any]) -> Path | None:
        """The env's python if it is built, else None; a stat, never a build (nor the runtime's
        wheel: before `ensure` made it, nothing is ready). A package `ensure` would refuse is
        not ready either: `ensure` says why."""
        if self._runtime is None and self._runtime_source is None:
            return None
        try:
            final = self.path(name, version, package)
        except KindEnvFailed:
            return None
        return final / "bin" / "python" if (final / MARKER).is_file() else None

    def ensure(self, name: str, version: int, package: Mapping[str, Any]) -> Path:
        """The env's python, built first unless it already is; KindEnvFailed when it cannot be."""
        final = self.path(name, version, package)
        python = final / "bin" / "python"
        if (final / MARKER).is_file():
            return python
        try:
            self._prepare_root()
            # 0600: a bot that could open it could hold the lock, and every build with it
            lock_fd = os.open(self.root / f".{final.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            with open(lock_fd, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another builder: wait for its env (bounded)
                if not (final / MARKER).is_file():
                    self._build_locked(final, name=name, version=version, package=package)
        except OSError as exc:
            raise KindEnvFailed(
                f"kind {name} v{version}: cannot build in {self.root}: {exc}"
            ) from exc
        return python

    def _build_locked(
        self, final: Path, *, name: str, version: int, package: Mapping[str, Any]
    ) -> None:
        for stale in self.root.glob(f".build-{final.name}-*"):  # builders that died
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # a directory without its marker
        build = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=self.root))
        try:
            self._build(build, final, name=name, version=version, package=package)
            build.rename(final)
        finally:
            shutil.rmtree(build, ignore_errors=True)

    def _prepare_root(self) -> None:
        """The root, 0755; missing parents 0711 (traversable by bot uids, not listable)."""
        missing = []
        here = self.root
        while not here.exists():
            missing.append(here)
            here = here.parent
        for path in reversed(missing):
            with suppress(FileExistsError):
                path.mkdir()
                path.chmod(0o711)
        if self.root.stat().st_mode & 0o777 != 0o755:
            self.root.chmod(0o755)

    def _build(
        self, build: Path, final: Path, *, name: str, version: int, package: Mapping[str, Any]
    ) -> None:
        deadline = time.monotonic() + self.timeout_s
        python = str(build / "bin" / "python")
        steps: list[tuple[str, list[str]]] = [
            ("creating the virtualenv", [sys.executable, "-m", "venv", str(build)]),
            ("pip install", [python, *_PIP_INSTALL, self.runtime(), *_install_args(package)]),
            ("checking the runtime", [python, "-I", "-c", "import botfleet.runtime"]),
        ]
        with tempfile.TemporaryFile(prefix="kind-env-") as out:
            for what, argv in steps:
                self._run(argv, what=f"kind {name} v{version}: {what}", build=build,
                          deadline=deadline, out=out)  # fmt: skip
        _repoint_scripts(build / "bin", str(build), str(final))
        _open_to_bots(build)
        size_mb = _size_mb(build)
        marker = {
            "name": name,
            "version": version,
            "package": dict(package),
            "runtime": self.runtime(),
            "size_mb": round(size_mb, 1),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (build / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        (build / MARKER).chmod(0o644)

    def _run(
        self, argv: Sequence[str], *, what: str, build: Path, deadline: float, out: IO[bytes]
    ) -> None:
        """One build step, killed (its whole session) once past the deadline or over the size."""
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=_pip_env(), cwd=build, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise KindEnvFailed(f"{what}: cannot start {argv[0]}: {exc}") from exc
        failure = None
        try:
            while failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    failure = (
                        f"{what}: killed after {self.timeout_s:g} s "
                        "(BOTFLEET_PROCESS_KIND_ENV_TIMEOUT_S)"
                    )
                    break
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=min(_POLL_S, remaining))
                    break
                if self.max_mb and (size := _size_mb(build)) > self.max_mb:
                    failure = (
                        f"{what}: stopped at {size:.0f} MiB, over "
                        f"{self.max_mb} MiB (BOTFLEET_PROCESS_KIND_ENV_MAX_MB)"
                    )
        finally:
            if proc.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if failure is None and proc.returncode != 0:
            failure = f"{what} failed (exit {proc.returncode})"
        if failure is None and self.max_mb and (size := _size_mb(build)) > self.max_mb:
            failure = (
                f"{what}: {size:.0f} MiB, over {self.max_mb} MiB (BOTFLEET_PROCESS_KIND_ENV_MAX_MB)"
            )
        if failure is not None:
            raise KindEnvFailed(failure, output_tail=_tail(out))


def _repoint_scripts(bin_dir: Path, old: str, new: str) -> None:
    """Console scripts name their interpreter by absolute path: the build's, until now."""
    for path in bin_dir.iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old.encode() in data:
            path.write_bytes(data.replace(old.encode(), new.encode()))


def _open_to_bots(build: Path) -> None:
    """Readable and runnable by every uid, writable by the manager alone."""
    for top, _dirs, files in os.walk(build):
        os.chmod(top, 0o755)
        for name in files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            if not stat.S_ISLNK(info.st_mode):
                os.chmod(path, 0o755 if info.st_mode & 0o111 else 0o644)
