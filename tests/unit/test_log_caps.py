"""A bot's logs are bounded (issue 15 item 1), the pure parts: long lines cut with a marker, the
total bounded, a tail that reads at most its cap, the log files of a deleted bot removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from botfleet.manager.background.reconciler.workloads import LAST_LOG_LINES, kept_lines
from botfleet.manager.core.settings import Settings
from botfleet.orchestrators.log_tail import LineCapper, LogLimits, cap_line, read_tail, tail_text

MIB = 1 << 20


def test_caps_cut_long_lines_with_a_marker_and_bound_the_total() -> None:
    limits = LogLimits(max_bytes=4096, line_max_bytes=300)
    cut = cap_line(b"x" * 10_000, 300)
    kept = cut.index("…".encode())
    assert len(cut) <= 300 and cut.endswith(f"[truncated {10_000 - kept} bytes]".encode())
    text = tail_text(
        b"".join(b"line %d " % i + b"y" * 500 + b"\n" for i in range(100)), tail=50, limits=limits
    )
    lines = text.encode().split(b"\n")
    assert len(text.encode()) <= 4096 and all(len(line) <= 300 for line in lines)
    assert lines[-1].startswith(b"line 99 ")  # the newest survive, the oldest go
    capper = LineCapper(300)
    streamed = capper.feed(b"a" * 200) + capper.feed(b"a" * 1000 + b"\nshort\n")
    first = streamed.split(b"\n")[0]
    assert len(first) <= 300
    assert first.endswith(f"[truncated {1200 - first.index('…'.encode())} bytes]".encode())
    assert streamed.split(b"\n")[1] == b"short"


def test_last_logs_kept_on_the_record_are_capped() -> None:
    settings = Settings(log_tail_max_bytes=8192, log_line_max_bytes=512)
    kept = kept_lines("z" * 3 * MIB + "\n" + "\n".join(f"l{i}" for i in range(5000)), settings)
    assert len(kept.encode()) <= 8192
    assert len(kept.splitlines()) <= LAST_LOG_LINES and kept.splitlines()[-1] == "l4999"
    huge_line = kept_lines("q" * 3 * MIB, settings)
    assert len(huge_line.encode()) <= 512 and "truncated" in huge_line


def test_tail_reads_at_most_the_cap_and_one_block(tmp_path: Path) -> None:
    """Read through a file that counts its reads: a 24 MiB log costs the cap, not 24 MiB."""
    path = tmp_path / "b.log"
    path.write_bytes(b"x" * 24 * MIB + b"\nlast\n")
    limits = LogLimits()
    read = 0
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = real_open(self, *args, **kwargs)  # type: ignore[arg-type]
        real_read = handle.read

        def counted(n: int = -1) -> bytes:
            nonlocal read
            data = real_read(n)
            read += len(data)
            return data

        handle.read = counted  # type: ignore[method-assign]
        return handle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", counting_open)
        text = read_tail([path], tail=50, limits=limits)
    assert read <= limits.max_bytes + 65_536
    assert text.splitlines()[-1] == "last" and "[truncated]" in text.splitlines()[0]


def test_log_files_of_a_deleted_bot_can_be_removed(tmp_path: Path) -> None:
    from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

    backend = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=tmp_path, bot_uids="off"))
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("b1.log", "b1.log.1", "b1.log.2", "b10.log", "b1.logx"):
        (logs / name).write_text("x")
    backend.delete_logs("b1")
    assert sorted(os.listdir(logs)) == ["b1.logx", "b10.log"]
