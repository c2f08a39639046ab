"""llama-cpp-python's high-level ``Llama``, used by tests as an independent reference,
loaded the way prometheus-lite loads models on this machine.

``llama_cpp.Llama`` has no ``use_extra_bufts`` argument: it starts from
``llama_model_default_params()``, whose extra CPU buffer types (AMX, repacked weights)
crash on some CPUs (see prometheus_lite.native). :func:`reference_llama` makes that
default follow prometheus-lite's decision for the one load, so a reference model never
kills the test process where the Judge itself runs fine.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()


def reference_llama(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """``llama_cpp.Llama(path, **kwargs)`` with ``use_extra_bufts`` as the Judge uses it."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings

    from prometheus_lite.native import extra_buffer_types_ok

    extra = extra_buffer_types_ok()
    with _lock:
        default = bindings.llama_model_default_params

        def decided() -> Any:
            params = default()
            params.use_extra_bufts = extra
            return params

        bindings.llama_model_default_params = decided  # read by Llama.__init__ at load
        try:
            return llama_cpp.Llama(str(path), **kwargs)
        finally:
            bindings.llama_model_default_params = default
