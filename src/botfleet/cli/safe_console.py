"""The consoles of `botfleet.cli.output`, in their own module: importing it imports Rich."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from botfleet.cli.output import UNSAFE_IN_LOGS, clean


class SafeConsole(Console):
    """A console whose text never holds a control character: Rich's own controls (cursor moves,
    styles) travel outside the text, so cleaning the text's is the last guard for a path that
    forgot `clean`."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not UNSAFE_IN_LOGS.search(segment.text):
                yield segment
            else:
                yield Segment(clean(segment.text, multiline=True), segment.style, None)
