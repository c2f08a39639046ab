"""The ``prometheus-lite`` command line: grade, compare, rubrics, info, eval (+ convert,
quantize, bench, serve).

Only this package prints and picks exit codes: 0 success, 1 a prometheus-lite error
(``Error: ...`` on stderr; ``PROMETHEUS_LITE_DEBUG=1`` shows the traceback instead)
or a batch in which every item of the run failed, 2 a usage error, 75 (``EX_TEMPFAIL``)
a batch that left items behind after a transient llama.cpp failure (rerun to retry
them). Machine-readable output goes to stdout or the ``--output`` file; progress and
logs go to stderr.

Where each command lives: ``group`` (the ``main`` group, ``-v``, errors to exit codes),
``judging`` (grade, compare), ``batch_mode`` (their ``--input`` files and ``--ray``),
``info`` (info, rubrics), ``evaluation`` (eval); convert/quantize, bench and serve come from
``prometheus_lite.convert``, ``.bench`` and ``.server``. The CLI is the top floor: no
other module imports from it (shared options live in ``prometheus_lite.options``).
"""

from __future__ import annotations

# Installed as subpackages of prometheus_lite (see pyproject's wheel.packages).
from prometheus_lite.bench.cli import bench_command
from prometheus_lite.convert.cli import convert_command, quantize_command
from prometheus_lite.server.cli import serve_command

from . import evaluation, info, judging
from .group import main

__all__ = ["main"]

for command in (
    judging.grade,
    judging.compare,
    info.rubrics,
    info.info,
    evaluation.eval_command,
    convert_command,
    quantize_command,
    bench_command,
    serve_command,
):
    main.add_command(command)
del command
