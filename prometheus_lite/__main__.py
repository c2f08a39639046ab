"""``python -m prometheus_lite``: the same as the ``prometheus-lite`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main(prog_name="prometheus-lite")
