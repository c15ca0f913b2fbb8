"""Run the stages of a run folder one after the other, each as a ``scenefit VERB`` process.

    from scenefit.pipeline.runner import run_stages
    outcome = run_stages(run, stages_for(run), start=None, stop=None, console=console)

Why processes and not calls in this one: a stage's whole output — its tables, the Trainer's
lines, warnings from C libraries, a traceback — lands in its log exactly as the verb prints it
standalone; each stage starts with a clean interpreter (no torch threads, logging handlers or
loaded models carried over, the memory of train is freed before evaluate); and a kill is the
same kill a standalone verb gets, so what a stage leaves behind is what its own resume logic
was written for. A stage's process dies with the runner (Linux: the parent-death signal; else
its next write to the closed pipe fails), and Ctrl-C reaches both. The cost is a second or two
of imports per stage.

The output of a stage is read through a pipe: every line goes to RUN/logs/NN-STAGE.log, a
progress bar's redraws become one line every :data:`PROGRESS_EVERY_S` seconds (and its last
state), and the latest line feeds the live line on a terminal.
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable, Optional

from scenefit.pipeline.process import child_env, parent_death_hook, stage_command
from scenefit.pipeline.run_folder import RunFolder
from scenefit.pipeline.stages import DONE, Stage, headline

#: A progress bar's redraw is written to the log at most this often (its final state always).
PROGRESS_EVERY_S = 10.0
#: Lines of a failed stage's log printed on the terminal.
TAIL_LINES = 30
#: How long a stage may take to exit after Ctrl-C before it is killed.
INTERRUPT_GRACE_S = 30.0

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BREAK = re.compile(r"\r\n|\r|\n")


class _Signals:
    """SIGTERM to the runner is handled as Ctrl-C (KeyboardInterrupt where it waits), remembered
    here so the stage gets SIGTERM too and the run exits 143 rather than 130."""

    terminated = False

    @classmethod
    def on_term(cls, signum, frame):
        cls.terminated = True
        raise KeyboardInterrupt


def _interrupt_code() -> int:
    return 143 if _Signals.terminated else 130


class LogLines:
    """A stage's raw output -> lines in its log. ``on_line(text)`` sees every line and redraw."""

    def __init__(self, log: IO[str], on_line: Callable[[str], None], every_s: float = PROGRESS_EVERY_S):
        self.log, self.on_line, self.every_s = log, on_line, every_s
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""
        self._redraw: Optional[str] = None  # the latest redraw not yet in the log
        self._redraw_written = float("-inf")

    def feed(self, data: bytes) -> None:
        text = self._tail + self._decoder.decode(data)
        pos = 0
        for m in _BREAK.finditer(text):
            self._segment(text[pos:m.start()], redraw=m.group() == "\r")
            pos = m.end()
        self._tail = text[pos:]

    def close(self) -> None:
        self._tail += self._decoder.decode(b"", final=True)
        if self._tail:
            self._segment(self._tail, redraw=False)
            self._tail = ""
        if self._redraw is not None:
            self._write(self._redraw)
        self.log.flush()

    def _segment(self, raw: str, redraw: bool) -> None:
        text = _ANSI.sub("", raw).rstrip()
        if not text.strip():
            return
        self.on_line(text)
        if not redraw:
            self._redraw = None  # a line ends the bar's redraws (tqdm ends a bar with its last state + newline)
            self._write(text)
            return
        now = time.monotonic()
        if now - self._redraw_written >= self.every_s:
            self._write(text)
            self._redraw, self._redraw_written = None, now
        else:
            self._redraw = text

    def _write(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()


def run_logged(cmd: list[str], log: IO[str], on_line: Callable[[str], None], env: Optional[dict] = None) -> int:
    """Run ``cmd`` with its output through :class:`LogLines`; return its exit status. Ctrl-C or
    SIGTERM is passed on to it; the exception is raised again once it has exited."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env or child_env(), preexec_fn=parent_death_hook())
    lines = LogLines(log, on_line)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        while chunk := os.read(fd, 65536):
            lines.feed(chunk)
    except KeyboardInterrupt:
        # Ctrl-C on a terminal reached the stage too; a signal sent to the runner alone is passed on
        proc.send_signal(signal.SIGTERM if _Signals.terminated else signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        try:
            while chunk := os.read(fd, 65536):
                lines.feed(chunk)
        except OSError:
            pass
        lines.close()
        raise
    lines.close()
    return proc.wait()


@dataclass
class StageResult:
    name: str
    outcome: str  # "ran", "kept", "failed", "interrupted"
    seconds: float = 0.0
    exit_code: int = 0
    line: str = ""


@dataclass
class RunOutcome:
    stages: list[StageResult] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> Optional[StageResult]:
        return next((s for s in self.stages if s.outcome in ("failed", "interrupted")), None)


def select(stages: list[Stage], start: Optional[str], stop: Optional[str]) -> tuple[int, int]:
    """Indices of --from and --to in ``stages``; a ValueError names the stages there are."""
    names = [s.name for s in stages]
    for flag, name in (("--from", start), ("--to", stop)):
        if name is not None and name not in names:
            raise ValueError(f"{flag} {name}: this run has no such stage; its stages: {', '.join(names)}")
    i = names.index(start) if start else 0
    j = names.index(stop) if stop else len(stages) - 1
    if i > j:
        raise ValueError(f"--from {start} comes after --to {stop}; the order: {', '.join(names)}")
    return i, j


class _LiveLine:
    """What the terminal shows while a stage runs: its number, name, time and latest line."""

    def __init__(self, prefix: str, width: int):
        self.prefix, self.width = prefix, width
        self.t0 = time.monotonic()
        self.last = ""

    def __rich__(self):
        from rich.text import Text

        head = f"{self.prefix} {time.monotonic() - self.t0:5.0f}s  "
        return Text(head + self.last[: max(10, self.width - len(head) - 1)], no_wrap=True, overflow="ellipsis")


def run_stages(run: RunFolder, stages: list[Stage], start: Optional[str], stop: Optional[str], console,
               verbose: bool = False, in_process: Optional[Callable[[Stage, RunFolder, IO[str]], int]] = None) -> RunOutcome:
    """Run ``stages[start..stop]``: a done stage is kept (no-op) unless --from named it or an
    earlier one, a stage that is not done runs (and resumes by its own rules). One line per
    stage on ``console``; a failing stage stops the run with the end of its log.
    ``in_process(stage, run, log)`` runs the stages without a command (the demo's serve check)."""
    i, j = select(stages, start, stop)
    run.logs.mkdir(parents=True, exist_ok=True)
    outcome = RunOutcome()
    t_run = time.monotonic()
    total = len(stages)
    previous = signal.getsignal(signal.SIGTERM)
    _Signals.terminated = False
    signal.signal(signal.SIGTERM, _Signals.on_term)
    try:
        for k in range(i, j + 1):
            stage = stages[k]
            label = f"{k + 1:>3}/{total} {stage.name:<10}"
            redo = start is not None
            if not redo and stage.state(run).status == DONE:
                line = headline(stage, run)
                outcome.stages.append(StageResult(stage.name, "kept", line=line))
                console.print(f"{label}     –  done earlier: {_first(line)}", highlight=False, markup=False, soft_wrap=True)
                _more(console, line)
                continue
            result = _run_one(stage, run, k + 1, label, redo, console, verbose, in_process)
            outcome.stages.append(result)
            if result.outcome != "ran":
                outcome.exit_code = result.exit_code
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
        outcome.seconds = time.monotonic() - t_run
    return outcome


def _first(text: str) -> str:
    return text.split("\n", 1)[0]


def _more(console, text: str) -> None:
    for extra in text.split("\n")[1:]:
        console.print(f"{'':>22}{extra}", highlight=False, markup=False, soft_wrap=True)


def _run_one(stage: Stage, run: RunFolder, number: int, label: str, redo: bool, console, verbose: bool,
             in_process) -> StageResult:
    log_path = run.logs / f"{number:02d}-{stage.name}.log"
    t0 = time.monotonic()
    live = _LiveLine(label, console.width)
    show_live = console.is_terminal and not verbose

    def on_line(text: str) -> None:
        live.last = text
        if verbose:
            console.print(text, highlight=False, markup=False, soft_wrap=True)

    if verbose:
        console.rule(f"{number}. {stage.title}")
    code, interrupted = 0, False
    with open(log_path, "a", encoding="utf-8") as log:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        argv = stage.argv(run, redo) if stage.argv else None
        log.write(f"=== {started} {'scenefit ' + shlex.join(argv) if argv else stage.title}\n")
        log.flush()
        from contextlib import nullcontext

        from rich.live import Live

        try:
            with (Live(live, console=console, refresh_per_second=4, transient=True) if show_live else nullcontext()):
                if argv is not None:
                    code = run_logged(stage_command(argv), log, on_line)
                else:
                    code = in_process(stage, run, log) if in_process else 0
        except KeyboardInterrupt:
            interrupted = True
        log.write(f"=== exit {_interrupt_code() if interrupted else code} after {time.monotonic() - t0:.0f} s\n")
    seconds = time.monotonic() - t0
    if interrupted:
        code = _interrupt_code()
        console.print(f"{label} {seconds:5.0f}s  interrupted; what it finished is kept (log: {log_path})",
                      highlight=False, markup=False, soft_wrap=True)
        return StageResult(stage.name, "interrupted", seconds, code)
    if code != 0:
        console.print(f"{label} {seconds:5.0f}s  FAILED (exit {code}); the end of {log_path}:", highlight=False, soft_wrap=True,
                      markup=False)
        for text in tail(log_path, TAIL_LINES):
            console.print(f"    {text}", highlight=False, markup=False, soft_wrap=True)
        return StageResult(stage.name, "failed", seconds, code)
    line = headline(stage, run)
    console.print(f"{label} {seconds:5.0f}s  {_first(line)}", highlight=False, markup=False, soft_wrap=True)
    _more(console, line)
    return StageResult(stage.name, "ran", seconds, 0, line)


def tail(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a log."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200_000))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []
