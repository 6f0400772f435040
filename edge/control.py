"""The control journal: how an admin command reaches every worker process.

Worker 0 serves the admin API; a command (purge, reload) is applied there at once and
appended as one JSON line to ``STATE_DIR/control.jsonl`` (``O_APPEND``, one ``write``, so
lines from different writers never interleave). Every worker reads the new lines once a
second and applies the ones it did not write itself, so a purge holds on every worker within
about a second. The supervisor empties the journal at start; a worker starts reading at its
end, so old commands are never replayed.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger("edge.control")


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
        self.offset = os.fstat(fd).st_size
        os.close(fd)
        self.pid = os.getpid()

    @staticmethod
    def reset(path: str) -> None:
        """Start empty (the supervisor, before any worker runs)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8"):
            pass

    def append(self, command: dict[str, Any]) -> None:
        line = (json.dumps({**command, "pid": self.pid}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def poll(self) -> list[dict[str, Any]]:
        """The commands other processes appended since the last poll."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:          # emptied by a new supervisor
                    self.offset = 0
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                cmd = json.loads(line)
            except ValueError:
                log.warning("control journal: skipping a line that is not JSON: %r", line[:100])
                continue
            if cmd.get("pid") != self.pid:
                out.append(cmd)
        return out
