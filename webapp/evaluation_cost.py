"""How long `stockq evaluate` takes at its default settings, as the benchmark measured it: what a model card
without an evaluation, `stockq demo` and the console quote (no import beyond the standard library: the API
renders it into the console page)."""

from __future__ import annotations

# Minutes of one `stockq evaluate` at the defaults (every bundled ticker, a refit every 12 months from
# 2005) on the benchmark machine below: bench/skill.py measured 73 s of walk-forward and 95 s in all
# for the served recipe (`global`) on a quiet machine (14 min while a test suite shared the 2 cores).
EVALUATE_BENCH_MINUTES = 2
EVALUATE_BENCH_MACHINE = "2 CPU cores"


def not_evaluated_text() -> str:
    return (
        f"not evaluated yet: run `stockq evaluate` (about {EVALUATE_BENCH_MINUTES} minutes on "
        f"{EVALUATE_BENCH_MACHINE}, as benchmarked)"
    )
