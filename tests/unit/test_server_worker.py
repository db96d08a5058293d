"""How `ledger serve` sets up each gunicorn worker."""

from __future__ import annotations


def test_a_worker_freezes_what_it_loaded_and_collects_cycles_less_often():
    import gc

    from ledger.api.server import GC_THRESHOLDS, _post_worker_init

    before = gc.get_threshold()
    try:
        _post_worker_init(None)

        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > 10 * before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
