"""What an operator sees on a terminal: the console script with its stderr on a pseudo-terminal, read back
through a terminal emulator (pyte), so a line that is drawn and then erased counts as it looks."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass

import pyte

from ..shardkit import good_shards

# The runs here start their own Ray runtime, as an operator's command does, with the tests' shared one stopped
# (`own_ray`): a second runtime on the machine finds Ray's fixed agent port taken and starts 3-4 s later.
COLUMNS, ROWS = 400, 30  # wide enough for an error naming temporary paths twice in one line
LIVE_LINE = re.compile(r"^[\w ,.]+: images \d+ scored \([\d.]+/s\) \| shards \d+/\d+ committed .* \| (\d+) s$")


@dataclass
class Terminal:
    code: int
    stdout: str
    lines: list[str]  # what stays on the screen at the end
    frames: list[str]  # the cursor's line after every write: the live line as it was drawn
    seconds: float


def on_terminal(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, ctrl_c_at: str | None = None
) -> Terminal:
    """`python -m emonet_batch ARGS` with stderr on a COLUMNS x ROWS pseudo-terminal and stdout on a pipe; the
    terminal is the command's controlling one, so `ctrl_c_at` (text of the live line) types Ctrl-C into it then,
    and the terminal sends SIGINT to the command's process group, as a shell's terminal does."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "emonet_batch", *args],
        stdin=secondary,  # as in a shell: rich takes the width from the first standard stream on a terminal
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the terminal becomes the controlling one
    )
    os.close(secondary)
    frames = []
    while time.perf_counter() - started < timeout:
        if not select.select([primary], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # every writer closed the terminal
            break
        if not chunk:
            break
        stream.feed(chunk)
        frames.append(screen.display[screen.cursor.y].rstrip())
        if ctrl_c_at and ctrl_c_at in frames[-1]:
            os.write(primary, b"\x03")
            ctrl_c_at = None
    os.close(primary)
    code = process.wait(timeout=10)
    lines = [line.rstrip() for line in screen.display if line.strip()]
    return Terminal(code, process.stdout.read().decode(), lines, frames, time.perf_counter() - started)


def test_a_fresh_run_shows_only_our_lines_and_a_ticking_live_line(tiny_models, tmp_path, own_ray):
    good_shards(tmp_path / "in", shards=1, per_shard=8)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = on_terminal(
        *("score", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", str(tiny_models["small"])),
        "--no-stats",  # stats and the report have their own tests; the terminal is the point here
        env=env,
    )
    assert run.code == 0 and "exit code 0" in run.stdout, (run.stdout, run.lines)
    assert [line for line in run.lines if not line.startswith("emonet-batch: ")] == []  # nothing from Ray
    live = [frame for frame in run.frames if LIVE_LINE.match(frame)]
    assert {frame.split(":")[0] for frame in live} >= {"starting Ray", "starting the inference actors"}, run.frames
    assert len({LIVE_LINE.match(frame).group(1) for frame in live}) >= 3  # the clock moves while nothing is scored


def test_what_cannot_work_fails_at_once_in_one_line(tiny_models, tmp_path):
    good_shards(tmp_path / "in", shards=1, per_shard=2)
    (tmp_path / "a-file").write_text("in the way")
    no_credentials = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    no_credentials.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    model = ("--model", str(tiny_models["small"]))
    cases = [
        (("score", str(tmp_path / "nope.tar"), "--output", str(tmp_path / "o"), *model), None, "input not found"),
        (("score", str(tmp_path / "in"), "--output", str(tmp_path / "a-file" / "o"), *model), None, "cannot write"),
        (("score", str(tmp_path / "in"), "--output", "http://127.0.0.1:1/o", *model), None, "an HTTP URL is read-only"),
        (
            ("score", str(tmp_path / "in"), "--output", str(tmp_path / "o"), *model),
            {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:8265"},  # the dashboard's address, not the cluster's
            "RAY_ADDRESS=http://127.0.0.1:8265 is no Ray cluster address",
        ),
        (("score", "s3://corpus/x.tar", "--output", str(tmp_path / "o"), *model), no_credentials, "no credentials"),
    ]
    for args, env, message in cases:
        run = on_terminal(*args, env=env)
        assert run.code == 2 and len(run.lines) == 1, run.lines
        assert run.lines[0].startswith(f"emonet-batch: error: {message}"), run.lines
        assert run.seconds < 5, (message, run.seconds)
    assert not (tmp_path / "o").exists()


def test_ctrl_c_while_the_actors_start_is_one_line_and_exit_130(tiny_models, tmp_path, own_ray):
    good_shards(tmp_path / "in", shards=1, per_shard=8)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = ("score", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", str(tiny_models["small"]))
    run = on_terminal(*args, "--no-stats", env=env, ctrl_c_at="starting the inference actors")
    assert run.code == 130 and run.lines == ["emonet-batch: interrupted"], (run.code, run.lines, run.stdout)
    assert run.stdout == ""  # no summary: the run did not end
    assert not (tmp_path / "out" / "manifest.json").exists()
