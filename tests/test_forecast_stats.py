"""Forecast scores, significance tests, baselines and CQR on cases with known answers (pure, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ml.evaluation.baselines import LinearQuantiles, empirical_quantiles, ewma_volatility, zero_ewma_quantiles
from ml.evaluation.calibration import apply_cqr, fit_cqr
from ml.evaluation.compare import decide_promotion, verdict
from ml.evaluation.scoring import interval_scores, naive_scale, pinball_losses, score
from ml.evaluation.stats import bootstrap_mean, bootstrap_skill, diebold_mariano, pesaran_timmermann, skill

Z90 = sps.norm.ppf(0.9)


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + rng.standard_normal()
    return x


# -- Diebold–Mariano --------------------------------------------------------------------------------
def test_dm_on_identical_losses_is_neutral() -> None:
    loss = np.abs(np.random.default_rng(0).normal(size=100))
    out = diebold_mariano(loss, loss.copy(), horizon=7)
    assert (out["statistic"], out["p_value"], out["mean_diff"], out["lag"]) == (0.0, 0.5, 0.0, 6)


def test_dm_at_horizon_one_is_the_one_sample_t_test() -> None:
    # Lag 0 HAC variance is the population variance; the HLN factor sqrt((n - 1) / n) turns it into
    # the sample variance, so DM-HLN at h = 1 is exactly Student's one-sample t test.
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, size=80), rng.gamma(2.0, size=80) + 0.2
    out = diebold_mariano(a, b, horizon=1)
    t = sps.ttest_1samp(a - b, 0.0, alternative="less")
    assert out["statistic"] == pytest.approx(t.statistic, rel=1e-10)
    assert out["p_value"] == pytest.approx(t.pvalue, rel=1e-8)
    assert out["p_value"] < 0.05
    assert diebold_mariano(b, a, horizon=1)["p_value"] == pytest.approx(1 - out["p_value"], rel=1e-8)


def test_dm_uses_newey_west_at_lag_h_minus_1_with_the_hln_factor() -> None:
    d = _ar1(300, 0.6, seed=2) * 0.1 - 0.05
    h, n = 4, 300
    centred = d - d.mean()
    gamma = [centred[j:] @ centred[: n - j] / n for j in range(h)]
    long_run = gamma[0] + 2 * sum((1 - j / h) * gamma[j] for j in range(1, h))
    hln = np.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    expected = d.mean() / np.sqrt(long_run / n) * hln
    out = diebold_mariano(d, np.zeros(n), horizon=h)
    assert out["statistic"] == pytest.approx(expected, rel=1e-10)
    assert out["p_value"] == pytest.approx(sps.t.cdf(expected, df=n - 1), rel=1e-8)


def test_dm_refuses_too_few_pairs_and_promotion_needs_significance() -> None:
    with pytest.raises(ValueError, match="at least 16 pairs"):
        diebold_mariano(np.ones(10), np.zeros(10), horizon=7)
    rng = np.random.default_rng(3)
    champion = np.abs(rng.normal(size=300))
    better = decide_promotion(champion * 0.8, champion, horizon=7)
    noise = decide_promotion(champion + rng.normal(0, 0.05, 300), champion, horizon=7)
    tie = decide_promotion(champion, champion, horizon=7)
    assert better["promote"] and better["p_value"] < 1e-6
    assert not tie["promote"] and tie["p_value"] == 0.5
    assert noise["promote"] is (noise["p_value"] < 0.10)


# -- Pesaran–Timmermann -----------------------------------------------------------------------------
def test_pt_on_perfect_random_and_constant_calls() -> None:
    rng = np.random.default_rng(4)
    up = np.repeat([True, False], 100)
    rng.shuffle(up)
    perfect = pesaran_timmermann(up, up)
    # Balanced and perfect: P = 1, P* = 1/2, so PT = n / sqrt(n - 1).
    assert perfect["statistic"] == pytest.approx(200 / np.sqrt(199))
    assert perfect["p_value"] < 1e-40
    wrong = pesaran_timmermann(~up, up)
    assert wrong["p_value"] > 0.999
    coin = pesaran_timmermann(rng.random(200) > 0.5, up)
    assert 0.05 < coin["p_value"] < 0.95
    assert pesaran_timmermann(np.ones(200, bool), up) == {"statistic": None, "p_value": None, "n": 200}


# -- bootstrap --------------------------------------------------------------------------------------
def test_block_bootstrap_interval_covers_the_true_mean_and_widens_under_dependence() -> None:
    iid = np.random.default_rng(5).normal(1.0, 1.0, 400)
    ci = bootstrap_mean(iid, horizon=1, block=1, seed=5)
    assert ci["lo"] < 1.0 < ci["hi"]
    # The normal-theory 90 % interval is +-1.645 / sqrt(400) = +-0.082.
    assert ci["hi"] - ci["lo"] == pytest.approx(2 * 1.645 / 20, rel=0.15)
    dependent = _ar1(400, 0.8, seed=6)
    naive = bootstrap_mean(dependent, horizon=1, block=1, seed=6)
    blocks = bootstrap_mean(dependent, horizon=10, seed=6)
    assert blocks["block"] == 20
    assert blocks["hi"] - blocks["lo"] > 2 * (naive["hi"] - naive["lo"])
    assert blocks["lo"] < 0.0 < blocks["hi"]


def test_skill_and_its_paired_interval() -> None:
    rng = np.random.default_rng(7)
    base = np.abs(rng.normal(size=500)) + 0.5
    loss = base * 0.9 + rng.normal(0, 0.01, 500)
    assert skill(loss, base) == pytest.approx(1 - loss.mean() / base.mean())
    out = bootstrap_skill(loss, base, horizon=7, seed=7)
    assert out["lo"] < out["skill"] < out["hi"]
    # Pairing: the losses move together, so the interval is tight around 10 %.
    assert out["lo"] > 0.09 and out["hi"] < 0.11


def test_verdict_says_no_measurable_skill_when_the_interval_reaches_zero() -> None:
    skills = {
        "zero_ewma": {"skill": 0.02, "lo": -0.01, "hi": 0.05, "dm_p_value": 0.2},
        "empirical": {"skill": 0.10, "lo": 0.05, "hi": 0.15, "dm_p_value": 0.001},
    }
    out = verdict(skills, {"zero_ewma": 1.0, "empirical": 1.1})
    assert out["best_baseline"] == "zero_ewma" and out["measurable"] is False
    assert out["text"].startswith("no measurable skill over the best baseline, zero_ewma")
    good = verdict(skills, {"zero_ewma": 1.2, "empirical": 1.1})
    assert good["measurable"] and good["text"].startswith("skill +10.0% (90 % interval +5.0% to +15.0%)")


# -- scores -----------------------------------------------------------------------------------------
def test_scores_on_a_hand_computed_example() -> None:
    y = np.array([[0.02, 0.0], [-0.01, 0.03], [0.0, -0.04], [0.01, 0.01]])
    q = np.array([[-0.01, 0.0, 0.01]] * 4)[:, None, :].repeat(2, axis=1)
    q[:, 1] *= 2.0  # horizon 2: band -0.02..0.02, median 0
    q[:, :, 1] += 0.005  # median 0.005: always "up"
    pin = pinball_losses(y, q)
    # Window 0, horizon 1: y = 0.02 over p10 -0.01, p50 0.005, p90 0.01 -> (0.003 + 0.0075 + 0.001) / 3.
    assert pin[0, 0] == pytest.approx((0.1 * 0.03 + 0.5 * 0.015 + 0.9 * 0.01) / 3)
    winkler = interval_scores(y, q)
    assert winkler[0, 0] == pytest.approx(0.02 + 10 * 0.01)
    assert winkler[2, 1] == pytest.approx(0.04 + 10 * 0.02)
    train = np.array([[0.01, -0.02], [-0.03, 0.02]])
    out = score(y, q, mase_scale=naive_scale(train))
    h1, h2 = out["per_horizon"]
    assert h1["crps"] == pytest.approx(2 * h1["pinball"])
    assert h1["mae"] == pytest.approx(np.mean([0.015, 0.015, 0.005, 0.005]))
    assert h1["mase"] == pytest.approx(h1["mae"] / 0.02)
    assert h1["rel_mae_zero"] == pytest.approx(h1["mae"] / 0.01)
    # Zero returns are ties, excluded: horizon 1 has ups on windows 0 and 3 and a down on 1.
    assert (h1["direction_accuracy"], h1["up_rate"], h1["n_direction"]) == (pytest.approx(2 / 3), 2 / 3, 3)
    assert (h1["coverage_80"], h1["miss_below"], h1["miss_above"]) == (0.75, 0.0, 0.25)
    assert (h2["coverage_80"], h2["miss_below"], h2["miss_above"]) == (0.5, 0.25, 0.25)
    assert out["mase"] == pytest.approx((h1["mae"] + h2["mae"]) / (0.02 + 0.02))
    assert out["up_rate"] == pytest.approx(4 / 6)
    # A zero median makes no call: no direction accuracy at all, rather than "always down".
    q[..., 1] = 0.0
    no_call = score(y, q, mase_scale=naive_scale(train))
    assert no_call["direction_accuracy"] is None and no_call["per_horizon"][0]["n_direction"] == 0
    assert no_call["per_horizon"][0]["up_rate"] == pytest.approx(2 / 3)


# -- baselines --------------------------------------------------------------------------------------
def test_zero_ewma_and_empirical_baselines() -> None:
    returns = np.where(np.arange(50) % 2 == 0, 0.01, -0.01)
    vol = ewma_volatility(returns)
    np.testing.assert_allclose(vol, 0.01)
    q = zero_ewma_quantiles(vol[[10, 20]], 7)
    assert q.shape == (2, 7, 3)
    np.testing.assert_allclose(q[0, 3], [-Z90 * 0.02, 0.0, Z90 * 0.02])  # sqrt(4) = 2 days of vol
    shock = ewma_volatility(np.array([0.0, 0.0, 0.1]))
    assert shock[-1] == pytest.approx(np.sqrt(0.06 * 0.01))
    train = np.random.default_rng(8).normal(size=(200, 3))
    emp = empirical_quantiles(train, 5)
    np.testing.assert_allclose(emp[4], np.quantile(train, [0.1, 0.5, 0.9], axis=0).T)


def test_linear_quantiles_recover_a_linear_signal_through_collinear_features() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1500, 3))
    x = np.column_stack([x, x[:, 0] - x[:, 1]])  # an exact combination, like macd_hist
    y = np.column_stack([0.5 * x[:, 0] + rng.normal(0, 0.1, 1500), rng.normal(0, 1, 1500)])
    fitted = LinearQuantiles.fit(x[:1000], y[:1000])
    assert fitted.basis.shape == (4, 3)
    pred = fitted.predict(x[1000:])
    assert np.all(np.diff(pred, axis=-1) >= 0)
    np.testing.assert_allclose(pred[:, 0, 1], 0.5 * x[1000:, 0], atol=0.03)
    assert (pred[:, 0, 2] - pred[:, 0, 1]).mean() == pytest.approx(Z90 * 0.1, abs=0.01)
    coverage = ((y[1000:] >= pred[..., 0]) & (y[1000:] <= pred[..., 2])).mean(axis=0)
    assert np.all(np.abs(coverage - 0.8) < 0.05)


# -- CQR --------------------------------------------------------------------------------------------
def test_cqr_widens_a_narrow_band_to_the_true_quantiles() -> None:
    rng = np.random.default_rng(10)
    y = rng.normal(0, 1, (4000, 2))
    narrow = np.broadcast_to([-0.5, 0.0, 0.5], (4000, 2, 3)).copy()
    wide = narrow * 6
    cal = fit_cqr(y[:2000], narrow[:2000])
    assert cal["method"] == "cqr" and cal["exact"] and cal["n_calibration"] == 2000
    np.testing.assert_allclose(cal["correction"], Z90 - 0.5, atol=0.06)
    fixed = apply_cqr(narrow[2000:], cal)
    coverage = ((y[2000:] >= fixed[..., 0]) & (y[2000:] <= fixed[..., 2])).mean(axis=0)
    np.testing.assert_allclose(coverage, 0.8, atol=0.025)
    np.testing.assert_array_equal(fixed[..., 1], 0.0)
    # A far too wide band is narrowed (negative correction), never past the median.
    shrunk = apply_cqr(wide[2000:], fit_cqr(y[:2000], wide[:2000]))
    np.testing.assert_allclose(shrunk[0, :, 2], Z90, atol=0.06)
    huge = {**cal, "correction": [-10.0, -10.0]}
    assert np.all(apply_cqr(narrow, huge)[..., [0, 2]] == 0.0)


def test_cqr_finite_sample_rank_and_validation() -> None:
    scores = np.arange(1.0, 10.0)  # 9 windows outside the band by 1..9
    y = scores[:, None] + 1.0
    q = np.broadcast_to([-1.0, 0.0, 1.0], (9, 1, 3))
    cal = fit_cqr(y, q)
    assert cal["correction"] == [8.0] and cal["exact"]  # ceil(10 * 0.8) = 8th smallest
    assert fit_cqr(y[:3], q[:3])["exact"] is False
    with pytest.raises(ValueError, match="not a cqr"):
        apply_cqr(q, {"method": "other"})
    with pytest.raises(ValueError, match="need"):
        apply_cqr(np.zeros((2, 3, 3)), cal)
