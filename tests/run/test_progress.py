"""The live line. No Ray."""


def test_progress_ticks_on_its_own_and_shows_each_phase():
    """Log mode: a line every `log_every` seconds whatever happens, each phase as it starts, and the clock moves."""
    import io
    import time

    from emonet_batch.run.progress import Counters, Progress

    stream, counters = io.StringIO(), Counters(total_shards=2)
    progress = Progress(counters, "log", log_every=0.05, stream=stream)
    progress.phase("starting Ray")
    time.sleep(0.3)  # no batch arrives meanwhile
    counters.scored = 8
    progress.finished()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "emonet-batch: starting Ray"
    assert sum(line.startswith("emonet-batch: images 0 scored") for line in lines) >= 3
    assert lines[-1].startswith("emonet-batch: finished: images 8 scored") and "| 0 s" in lines[-1]
