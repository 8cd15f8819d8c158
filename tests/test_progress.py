"""Progress output: a bar on a terminal, plain lines (no carriage returns) in a log file.
(The CLI's own output off a terminal is checked in tests/test_byod.py.)"""
import io

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_plain_lines_off_a_terminal():
    from dpljax.progress import Progress

    lines, stream = [], io.StringIO()
    with Progress(True, 10, desc="train", log=lines.append, stream=stream, interval=0.0) as p:
        for k in range(10):
            p.update(k + 1, lambda: "loss=0.5")
    assert stream.getvalue() == ""
    assert lines and all("\r" not in l for l in lines)
    assert lines[-1].startswith("train: 10/10 steps (100.0%)") and lines[-1].endswith("(loss=0.5)")
    lines = []
    with Progress(True, 1000, desc="x", log=lines.append, stream=io.StringIO()) as p:  # 30 s apart
        for k in range(1000):
            p.update(k + 1)
    assert len(lines) == 1  # one at the end, not one per update
    tty = _Tty()
    with Progress(True, 10, desc="train", log=lines.append, stream=tty) as p:
        for k in range(10):
            p.update(k + 1, "loss=0.5")
    assert "\r" in tty.getvalue()  # on a terminal: the bar
    lines = []
    with Progress(False, 10, desc="train", log=lines.append, stream=io.StringIO(), interval=0.0) as p:
        p.update(10)
    assert lines == []
