"""Pretrained weights of timm architectures, offline: where timm would fetch them from, the local
Hugging Face / torch hub caches (resolved from the environment at call time), a fast one-line
``DataNotFoundError`` when a file is missing, and ``prefetch_weights`` to fill those caches on a
machine with internet. Weights are never downloaded at run time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import torch

from bench.errors import BenchError, DataNotFoundError
from bench.models.architectures import MODELS, timm_module, timm_pretrained_cfg, unknown_architecture

PREFETCH_HINT = "run `bench prefetch MATRIX` on a machine with internet, or set HF_HOME to a cache that has it"


def hf_hub_cache_dir() -> str:
    """The Hugging Face hub cache, from the environment *now* (huggingface_hub reads it at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return os.path.expanduser(os.path.expandvars(explicit))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")


def torch_hub_checkpoint_dir() -> str:
    """Where ``torch.hub.load_state_dict_from_url`` keeps downloads (timm's ``url`` weights)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


@dataclass(frozen=True)
class _Candidate:
    """One place the weights of an architecture may be cached."""

    where: str  # "hf" or "url" or "file"
    ref: str  # hf repo id, url or path
    filename: str
    revision: str | None = None
    custom_load: bool = False

    def describe(self) -> str:
        if self.where == "hf":
            return f"{self.ref}/{self.filename} in {hf_hub_cache_dir()}"
        if self.where == "url":
            return f"{self.filename} in {torch_hub_checkpoint_dir()}"
        return self.ref

    def cached_path(self) -> str | None:
        if self.where == "hf":
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.ref, self.filename, cache_dir=hf_hub_cache_dir(),
                                           revision=self.revision)
            return found if isinstance(found, str) else None
        path = os.path.join(torch_hub_checkpoint_dir(), self.filename) if self.where == "url" else self.ref
        return path if os.path.isfile(path) else None


@dataclass(frozen=True)
class _Weights:
    path: str
    custom_load: bool


def no_weights(name: str) -> BenchError:
    return BenchError(f"architecture {name!r} is a paper model trained from scratch; no pretrained weights exist "
                      "(set pretrained: false)")


def _weight_candidates(name: str) -> list[_Candidate]:
    """Where timm would fetch ``name``'s weights from, preferred first (mirrors timm's resolution)."""
    if name in MODELS:
        raise no_weights(name)
    if not timm_module().is_model(name):
        raise unknown_architecture(name)
    from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, hf_split

    cfg = timm_pretrained_cfg(name)
    out: list[_Candidate] = []
    if cfg is None:
        return out
    if cfg.file:
        out.append(_Candidate("file", str(cfg.file), os.path.basename(str(cfg.file)),
                              custom_load=bool(cfg.custom_load)))
    if cfg.hf_hub_id:
        repo, revision = hf_split(cfg.hf_hub_id)
        filename = cfg.hf_hub_filename or HF_WEIGHTS_NAME
        hf_custom = cfg.custom_load == "hf"
        names = [] if hf_custom else list(_get_safe_alternatives(filename))
        for fn in names + [filename]:
            out.append(_Candidate("hf", repo, fn, revision, custom_load=hf_custom))
    if cfg.url:
        out.append(_Candidate("url", cfg.url, os.path.basename(urlparse(cfg.url).path),
                              custom_load=cfg.custom_load is True))
    return out


def find_cached_weights(name: str) -> _Weights:
    """The local weight file of timm architecture ``name``, or a fast one-line DataNotFoundError."""
    candidates = _weight_candidates(name)
    if not candidates:
        raise BenchError(f"timm architecture {name!r} has no pretrained weights; set pretrained: false")
    for cand in candidates:
        path = cand.cached_path()
        if path is not None:
            return _Weights(path, cand.custom_load)
    looked = "; ".join(c.describe() for c in candidates)
    raise DataNotFoundError(f"pretrained weights for architecture {name!r} not found in the local cache "
                            f"(looked for {looked}); {PREFETCH_HINT}")


def check_pretrained_available(name: str) -> None:
    """Raise the one-line error ``create_model(name, pretrained=True)`` would, without building it."""
    find_cached_weights(name)


def cached_weights(name: str) -> str:
    """The local file ``create_model(name, pretrained=True)`` would load, else its DataNotFoundError."""
    return find_cached_weights(name).path


def _hub_errors() -> tuple[type[BaseException], ...]:
    """huggingface_hub failures that are not OSError (its httpx HTTP base, Xet); names vary by version."""
    import huggingface_hub.errors as hub_errors

    found = (getattr(hub_errors, n, None) for n in ("HTTPError", "XetDownloadError"))
    return tuple(e for e in found if isinstance(e, type) and issubclass(e, BaseException))


def _file_not_in_repo(exc: BaseException) -> bool:
    """The Hub answered that this file is not in the repo: its next filename is worth a try.

    Any other failure (offline, DNS, HTTP 5xx, no such repo) would repeat for every file of the
    repo, each after huggingface_hub's own retries.
    """
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError)


def _download(cand: _Candidate) -> str | None:
    """Fetch one candidate into its cache; None for a local ``file`` source, which cannot be fetched."""
    if cand.where == "hf":
        from huggingface_hub import hf_hub_download

        return hf_hub_download(cand.ref, cand.filename, revision=cand.revision, cache_dir=hf_hub_cache_dir())
    if cand.where == "url":
        dst = os.path.join(torch_hub_checkpoint_dir(), cand.filename)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        torch.hub.download_url_to_file(cand.ref, dst, progress=False)
        return dst
    return None


def prefetch_weights(name: str) -> str:
    """Make ``name``'s timm weights loadable offline; returns the file path.

    A file :func:`cached_weights` already finds (from any source timm would use) is not
    downloaded again. Otherwise each source is tried in timm's order (needs internet); if none
    works, one BenchError line names the architecture, why, and what to do. Afterwards
    ``create_model(name, ..., pretrained=True)`` works offline with the same HF_HOME / TORCH_HOME.
    """
    from bench.data.dataset_registry import DOWNLOAD_ERRORS
    from bench.data.datasets import download_failed, short_reason

    try:
        return cached_weights(name)
    except DataNotFoundError:
        pass
    candidates = _weight_candidates(name)
    reasons: list[str] = []
    unreachable: set[str] = set()  # after a network failure, the same kind of source is not retried
    for cand in candidates:
        if cand.where in unreachable:
            continue
        try:
            path = _download(cand)
        except DOWNLOAD_ERRORS + _hub_errors() as exc:
            reasons.append(short_reason(exc))
            if not _file_not_in_repo(exc):
                unreachable.add(cand.where)
            continue
        if path is not None:
            return path
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        reasons.append("HF_HUB_OFFLINE is set: unset it to download")
    looked = "; ".join(c.describe() for c in candidates)
    reason = "; ".join(dict.fromkeys(reasons)) or "no downloadable source"
    raise download_failed(f"weights for architecture {name}", reason,
                          f"set HF_HOME / TORCH_HOME to a cache that has them (looked for {looked})")


