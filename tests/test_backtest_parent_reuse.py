"""Which registered backtest parent a child's walk-forward may reuse
(ml.training.train.reusable_backtest_parent)."""

from __future__ import annotations

from datetime import date

from ml.training.train import reusable_backtest_parent

CUTOFF = date(2022, 4, 7)


def tags(trained_until: str, data_until: str | None, role: str = "backtest_parent", arch: str = "a") -> dict:
    found = {"role": role, "arch": arch, "trained_until": trained_until}
    return found if data_until is None else {**found, "data_until": data_until}


def test_a_holdout_parent_whose_data_ends_at_the_cutoff_is_reused_however_early_it_stopped_learning() -> None:
    # All history (1990-2022): the holdout stops learning ~10 years before its data ends. Judged by that
    # date it looked stale, and every child training trained and registered another parent.
    versions = {"2": tags("2012-09-04", "2022-04-06")}
    assert reusable_backtest_parent(versions, "a", CUTOFF) == "2"


def test_only_parents_that_saw_no_data_past_the_cutoff_and_are_recent_enough() -> None:
    versions = {
        "2": tags("2012-09-04", "2021-01-04"),  # data ends more than a year before the cutoff: too old
        "3": tags("2019-01-02", "2022-06-01"),  # saw data after the cutoff
        "4": tags("2013-05-01", "2021-12-30", arch="b"),  # another architecture
        "5": tags("2013-05-01", "2021-12-30", role="served"),  # the served parent, not a backtest one
        "6": tags("2012-12-31", "2021-09-01"),
        "7": tags("2013-02-01", "2022-02-01"),  # the newest that fits
    }
    assert reusable_backtest_parent(versions, "a", CUTOFF) == "7"
    assert reusable_backtest_parent({k: v for k, v in versions.items() if k != "7"}, "a", CUTOFF) == "6"
    assert reusable_backtest_parent({"2": versions["2"], "3": versions["3"]}, "a", CUTOFF) is None


def test_versions_registered_before_the_data_until_tag_are_judged_by_trained_until() -> None:
    assert reusable_backtest_parent({"2": tags("2021-06-01", None)}, "a", CUTOFF) == "2"
    assert reusable_backtest_parent({"2": tags("2012-09-04", None)}, "a", CUTOFF) is None
