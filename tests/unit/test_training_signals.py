"""Tune leaves its own SIGINT handler behind; training restores the caller's handlers."""

from __future__ import annotations

import signal

from raymlp.training.tuning import keep_signal_handlers


def test_handlers_replaced_inside_are_restored_after():
    def mine(*_):
        return None

    def tunes(*_):
        return None

    before = signal.signal(signal.SIGINT, mine)
    try:
        with keep_signal_handlers():
            signal.signal(signal.SIGINT, tunes)  # what tuner.fit() does
            signal.signal(signal.SIGTERM, tunes)
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is not tunes
    finally:
        signal.signal(signal.SIGINT, before)


def test_handlers_are_restored_when_training_raises():
    before = signal.getsignal(signal.SIGINT)
    try:
        with keep_signal_handlers():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise RuntimeError("trial failed")
    except RuntimeError:
        pass
    assert signal.getsignal(signal.SIGINT) is before
