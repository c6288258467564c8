"""`voxserve serve | transcribe | speak | models`, with Typer.

`transcribe`, `speak` and `models` run in-process on the same engines as the server, or against a
running server with `--url`. Every failure is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import click
import typer

from voxserve import __version__
from voxserve.audio.decode import SUPPORTED_INPUT_FORMATS
from voxserve.cli.backend import (
    Backend,
    CliError,
    SpeakOptions,
    StopAll,
    TranscribeOptions,
)
from voxserve.cli.progress import Bars
from voxserve.config import Settings

app = typer.Typer(
    name="voxserve",
    help="The OpenAI Audio API on local models: a server, and the same engines from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class TranscriptFormat(StrEnum):
    json = "json"
    text = "text"
    srt = "srt"
    vtt = "vtt"
    verbose_json = "verbose_json"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class SpeechFormat(StrEnum):
    mp3 = "mp3"
    opus = "opus"
    aac = "aac"
    flac = "flac"
    wav = "wav"
    pcm = "pcm"


# The file name each transcript format is written under with --output-dir.
_EXTENSIONS = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}
_SPEECH_SUFFIXES = {".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac", ".flac": "flac", ".wav": "wav",
                    ".pcm": "pcm", ".raw": "pcm"}  # fmt: skip

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="VOXSERVE_URL",
        help="A running server (http://host:8000) to send the work to; without it, runs in-process.",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="VOXSERVE_API_KEY", help="Key for --url, if the server has keys.", show_default=False
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]


def _backend(url: str | None, api_key: str | None) -> Backend:
    if url:
        from voxserve.cli.remote import RemoteBackend

        return RemoteBackend(url, api_key)
    from voxserve.cli.local import LocalBackend  # in-process work needs no key: --api-key is for --url

    return LocalBackend()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voxserve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


# ---- serve ----------------------------------------------------------------------------------------


def _split_ids(values: list[str]) -> list[str]:
    """`--preload a,b --preload c` -> [a, b, c]."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1, env VOXSERVE_HOST).")] = (
        None
    ),
    port: Annotated[int | None, typer.Option(help="Port (default 8000, env VOXSERVE_PORT).")] = None,
    allow_unauthenticated: Annotated[
        bool, typer.Option("--allow-unauthenticated", help="Allow a non-loopback --host with no VOXSERVE_API_KEYS.")
    ] = False,
    preload: Annotated[
        list[str] | None,
        typer.Option(help="Model ids to load at start, comma-separated or repeated (env VOXSERVE_PRELOAD)."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error (env VOXSERVE_LOG_LEVEL).")] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option(help="Log lines as text or JSON (env VOXSERVE_LOG_FORMAT).", show_default=False)
    ] = None,
) -> None:
    """Start the HTTP server."""
    from voxserve.server.run import UnsafeBind, run_server

    overrides = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "allow_unauthenticated": allow_unauthenticated or None,
            "preload": None if preload is None else _split_ids(preload),
            "log_level": log_level,
            "log_format": None if log_format is None else str(log_format),
        }.items()
        if value is not None
    }
    try:
        run_server(Settings(**overrides))
    except UnsafeBind as exc:
        raise CliError(str(exc), exit_code=2) from exc


# ---- transcribe -----------------------------------------------------------------------------------


def _audio_files(inputs: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the audio files directly inside it."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            inside = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in SUPPORTED_INPUT_FORMATS
            )
            if not inside:
                raise CliError(f"{path}: no audio files in this folder", exit_code=2)
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise CliError(f"{path}: no such file", exit_code=2)
    return found


def _write_text(target: str, body: str) -> None:
    if target == "-":
        sys.stdout.write(body)
        sys.stdout.flush()
    else:
        Path(target).write_text(body, encoding="utf-8")


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files, or folders of them.", show_default=False)],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model id or alias.", show_default=False)] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="ISO-639-1 code; detected if left out.", show_default=False)
    ] = None,
    response_format: Annotated[TranscriptFormat, typer.Option("--format", help="Output format.")] = (
        TranscriptFormat.text
    ),
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file ('-': stdout); one input only.")
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-d", help="Write each transcript to DIR/<name>.<ext>.", file_okay=False),
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Text that steers spelling and style.", show_default=False)] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=1.0, help="Sampling temperature.")] = 0.0,
    url: Url = None,
    api_key: ApiKey = None,
    quiet: Quiet = False,
) -> int:
    """Transcribe audio files, with a progress bar per file."""
    paths = _audio_files(files)
    if output is not None and output_dir is not None:
        raise CliError("give --output or --output-dir, not both", exit_code=2)
    if output is not None and len(paths) > 1:
        raise CliError(f"--output takes one input, got {len(paths)} files: use --output-dir", exit_code=2)
    fmt = str(response_format)
    targets: dict[Path, Path] = {}
    if output_dir is not None:
        for path in paths:
            target = output_dir / f"{path.stem}.{_EXTENSIONS[fmt]}"
            if target in targets.values():
                raise CliError(f"{path}: another input also writes {target}", exit_code=2)
            targets[path] = target
        output_dir.mkdir(parents=True, exist_ok=True)
    options = TranscribeOptions(model, language, fmt, prompt, temperature)

    backend = _backend(url, api_key)
    failures = 0
    try:
        with Bars(enabled=not quiet and sys.stderr.isatty(), stdout_is_terminal=sys.stdout.isatty()) as bars:
            for path in paths:
                bar = bars.add(path.name)
                try:
                    body = backend.transcribe(path, options, bar)
                except StopAll:
                    raise
                except CliError as exc:
                    failures += 1
                    bar.fail()
                    bars.error(f"voxserve: error: {path}: {exc.message}")
                    continue
                bar.finish()
                if path in targets:
                    targets[path].write_text(body, encoding="utf-8")
                    bars.note(f"{path} -> {targets[path]}")
                elif output is not None:
                    _write_text(output, body)
                else:
                    if len(paths) > 1:
                        body = f"==> {path} <==\n{body}\n"
                    _write_text("-", body)
    finally:
        backend.close()
    return 1 if failures else 0


# ---- speak ----------------------------------------------------------------------------------------


def _speech_text(text: str | None, file: Path | None) -> str:
    if (text is None) == (file is None):
        raise CliError("give the text to say, or -f FILE, or - to read stdin", exit_code=2)
    if file is not None:
        said = file.read_text(encoding="utf-8")
    elif text == "-":
        said = sys.stdin.read()
    else:
        said = text or ""
    if not said.strip():
        raise CliError("there is no text to say", exit_code=2)
    return said


@app.command()
def speak(
    text: Annotated[
        str | None, typer.Argument(help="The text to say; '-' reads it from stdin.", show_default=False)
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Read the text from this file.", exists=True, dir_okay=False),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Audio file to write ('-': stdout). Default: stdout when piped."),
    ] = None,
    voice: Annotated[str, typer.Option(help="An OpenAI voice name or a local voice.")] = "alloy",
    response_format: Annotated[
        SpeechFormat | None,
        typer.Option("--format", help="Audio format; default: --output's extension, else mp3.", show_default=False),
    ] = None,
    speed: Annotated[float, typer.Option(min=0.25, max=4.0, help="0.25 to 4.0.")] = 1.0,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model id or alias.", show_default=False)] = None,
    url: Url = None,
    api_key: ApiKey = None,
    quiet: Quiet = False,
) -> None:
    """Turn text into speech."""
    said = _speech_text(text, file)
    if output is None and sys.stdout.isatty():
        raise CliError("not writing audio to a terminal: give -o FILE, or pipe the output", exit_code=2)
    if response_format is not None:
        fmt = str(response_format)
    else:
        fmt = _SPEECH_SUFFIXES.get(Path(output).suffix.lower(), "mp3") if output and output != "-" else "mp3"

    backend = _backend(url, api_key)
    try:
        audio = backend.speak(said, SpeakOptions(model, voice, fmt, speed))
    finally:
        backend.close()
    if output is None or output == "-":
        sys.stdout.buffer.write(audio)
        sys.stdout.buffer.flush()
    else:
        Path(output).write_bytes(audio)
        if not quiet and sys.stderr.isatty():
            typer.echo(f"{output}: {len(audio) / 1024:.0f} KiB of {fmt}", err=True)


# ---- models ---------------------------------------------------------------------------------------


@app.command()
def models(url: Url = None, api_key: ApiKey = None) -> None:
    """List model ids and aliases, with their kinds."""
    backend = _backend(url, api_key)
    try:
        rows = backend.models()
    finally:
        backend.close()
    rows.sort(key=lambda row: row.kind)  # stable: ids before their aliases within a kind
    header = ("KIND", "ID", "ALIAS OF")
    table = [header, *((row.kind, row.id, row.alias_of or "") for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    for kind, model_id, target in table:
        typer.echo(f"{kind:<{widths[0]}}  {model_id:<{widths[1]}}  {target}".rstrip())


# ---- entry point ----------------------------------------------------------------------------------

# Typer >= 0.2x carries its own copy of Click, whose errors derive from TyperException; older ones raise Click's.
_USAGE_ERRORS: tuple[type[Exception], ...] = (
    click.ClickException,
    *filter(None, [getattr(typer, "TyperException", None)]),
)
_ABORTS: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="voxserve", standalone_mode=False)
    except CliError as exc:
        typer.echo(f"voxserve: error: {exc.message}", err=True)
        return exc.exit_code
    except _USAGE_ERRORS as exc:  # usage errors: one line, not a help panel
        message = exc.format_message()  # type: ignore[attr-defined]
        if message:  # empty after the help shown for a bare `voxserve`
            typer.echo(f"voxserve: error: {message}", err=True)
        return int(getattr(exc, "exit_code", 2))
    except _ABORTS:
        typer.echo("voxserve: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 1  # the reader went away (`| head`)
    return result if isinstance(result, int) else 0
