"""Forecast skill over years on the bundled panel (not a test): the volatility-scaled global model against
zero+EWMA (the reference declared in advance) and the strong baselines, with its rivals and ablations.

The bundled panel is skfolio's 20 large caps and ^GSPC, 1990-2022. Every recipe runs the same walk-forward
(ml.evaluation.walk_forward): a refit origin every January from --first-year, each refit warm-started from
the previous one (the per-ticker models trained from scratch), a decision every trading day, purged by
the horizon; the baselines (EWMA+FHS, GARCH(1,1)-t+FHS, pooled HAR+FHS) forecast the same decisions.
Intervals are 90 % block-bootstrap intervals with Politis-White block lengths (per ticker; pooled: the
same date blocks for every ticker); DM p-values are one-sided (the recipe is better).

Recipes: `global` (the served parent: the panel, ticker embedding, market inputs), `gspc_parent` (the
design's parent: ^GSPC alone, other tickers read with its embedding), `child_fine_tune` / `child_freeze`
(per ticker on top of the global parent at each origin), `per_ticker_750` (one model per ticker on its
last 750 days), and the ablations `no_market`, `no_embedding`, `with_technical` (RSI, MACD, moving averages).

    python -m bench.skill                    # every recipe, ~40-60 min on 2 CPU cores
    python -m bench.skill --recipes global   # the served recipe alone, ~8 min

Writes var/bench/skill.json and var/bench/skill_losses.parquet (every forecaster's per-window losses of the
first recipe group, from which each figure recomputes). Targets (issue 18): the global model's skill over
zero+EWMA above zero on >= 15 of 20 tickers, its pooled pinball below GARCH-t+FHS and the pooled HAR with
DM p < 0.10, 80 % coverage within 75-85 % on >= 18 tickers.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from bench.common import OUT_DIR, report
from ml.config import EvaluationConfig, PanelModelConfig
from ml.data.bundled import BundledSource, bundled_tickers
from ml.evaluation.neural import ChildRecipe, GlobalRecipe, NeuralRecipe, PerTickerRecipe
from ml.evaluation.run import evaluate
from ml.features.technical import TECHNICAL_INPUTS
from ml.features.volatility import MARKET_INPUTS, VOL_INPUTS
from ml.tickers import INDEX_TICKER
from ml.training.panel import PanelData, build_panel

GROUPS = (
    "global",
    "gspc_parent",
    "children",
    "per_ticker_750",
    "no_market",
    "no_embedding",
    "with_technical",
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(GROUPS), help=f"comma-separated, of {', '.join(GROUPS)}")
    p.add_argument("--first-year", type=int, default=2005)
    p.add_argument("--reps", type=int, default=1000, help="bootstrap replications")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def _recipes(group: str, model: PanelModelConfig) -> tuple[list[NeuralRecipe], tuple[str, ...]]:
    """The recipes of one walk-forward and the inputs its panel needs."""
    if group == "gspc_parent":
        return [GlobalRecipe(group, model, universe=(INDEX_TICKER,))], tuple(VOL_INPUTS)
    if group == "children":
        parent = GlobalRecipe("global_parent", model)
        children = [ChildRecipe(f"child_{s}", parent, s) for s in ("fine_tune", "freeze")]
        return [parent, *children], tuple(VOL_INPUTS)
    if group == "per_ticker_750":
        return [PerTickerRecipe(group, model, days=750)], tuple(VOL_INPUTS)
    if group == "no_market":
        return [GlobalRecipe(group, model)], tuple(i for i in VOL_INPUTS if i not in MARKET_INPUTS)
    if group == "no_embedding":
        return [GlobalRecipe(group, model.with_(embed=0))], tuple(VOL_INPUTS)
    if group == "with_technical":
        return [GlobalRecipe(group, model)], (*VOL_INPUTS, *TECHNICAL_INPUTS)
    return [GlobalRecipe("global", model)], tuple(VOL_INPUTS)


def _epoch_seconds(origins: list[dict[str, Any]]) -> float:
    """Mean seconds per training epoch over the walk-forward (model count x epochs for per-ticker recipes)."""
    epochs = sum(o.get("epochs_run", 0) * o.get("models", 1) for o in origins)
    return sum(o.get("seconds", 0.0) for o in origins) / epochs if epochs else float("nan")


def _row(label: str, result: dict[str, Any], seconds: float, origins: list[dict[str, Any]]) -> dict[str, Any]:
    pooled, counts = result["pooled"], result["counts"]
    ref = pooled["skill"]["zero_ewma"]
    return {
        "recipe": label,
        "pinball_x1e4": pooled["pinball"][label] * 1e4,
        "skill_vs_zero_ewma": f"{ref['skill']:+.2%} [{ref['lo']:+.2%}, {ref['hi']:+.2%}]",
        **{
            f"vs_{b}": f"{pooled['skill'][b]['skill']:+.2%} p={pooled['skill'][b]['dm_p_value']:.3f}"
            for b in ("ewma_fhs", "garch_t_fhs", "har_pooled")
        },
        "tickers_with_skill": f"{counts['skill_over_reference']}/{counts['tickers']}",
        "coverage_80": pooled["coverage_80"][label],
        "tickers_cov_75_85": f"{counts['coverage_80_in_75_85']}/{counts['tickers']}",
        "epoch_s": _epoch_seconds(origins),
        "wall_s": seconds,
    }


def _save_partial(rows: list[dict[str, Any]], details: dict[str, Any]) -> None:
    """The groups finished so far (the whole run takes most of an hour on 2 cores)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "skill.partial.json").write_text(json.dumps({"rows": rows, "recipes": details}, indent=1))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = EvaluationConfig(first_year=args.first_year, bootstrap_reps=args.reps)
    source = BundledSource()
    closes = {t: source.fetch(t)["close"] for t in bundled_tickers()}
    panels: dict[tuple[str, ...], PanelData] = {}
    rows, details, baseline_rows = [], {}, {}
    for group in args.recipes.split(","):
        recipes, inputs = _recipes(group, config.model)
        panel = panels.setdefault(inputs, build_panel(closes, inputs=inputs))
        started = time.perf_counter()
        result = evaluate(
            panel, recipes, config, with_raw=group == "global",
            on_progress=lambda what, k, of: print(f"{what} ({k}/{of})", flush=True),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if not details:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            result.losses.to_parquet(OUT_DIR / "skill_losses.parquet", index=False, compression="zstd")
            baseline_rows = {
                b: {
                    "pinball_x1e4": v * 1e4,
                    "coverage_80": result.reports[recipes[0].label]["pooled"]["coverage_80"][b],
                }
                for b, v in result.reports[recipes[0].label]["pooled"]["pinball"].items()
                if b != recipes[0].label
            }
        for label, report_ in result.reports.items():
            origins = [o for o in result.run.origins if o["recipe"] == label.removesuffix("_raw")]
            rows.append(_row(label, report_, seconds, origins))
            details[label] = {
                "verdict": report_["verdict"],
                "counts": report_["counts"],
                "pooled": report_["pooled"],
                "per_ticker": report_["per_ticker"],
                "origins": origins,
                "walk_forward_seconds": result.run.seconds,
                "baselines_seconds": result.baselines_seconds,
                "group_wall_s": seconds,
            }
        _save_partial(rows, details)
    report(
        "skill",
        rows,
        {
            "baselines": baseline_rows,
            "config": config.model_dump(mode="json"),
            "panel": {"tickers": len(closes), "first_decision_year": args.first_year},
            "device": "cuda" if torch.cuda.is_available() else f"cpu ({args.threads} threads)",
            "recipes": details,
        },
    )


if __name__ == "__main__":
    main()
