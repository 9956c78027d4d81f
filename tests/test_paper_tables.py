"""The paper-table scripts' arithmetic: bench/table12.py over seeds, bench/ablations.py against the default."""

from __future__ import annotations

import pytest

from bench.table12 import tabulate


def _compare(cider_base: float, cider_boot: float) -> dict:
    other = {"BLEU-4": 0.4, "txt_r1": 40.0, "img_r1": 20.0, "r_mean": 58.0}
    return {"baseline": {"CIDEr": cider_base, **other}, "bootstrapped": {"CIDEr": cider_boot, **other}}


def test_mean_std_and_wins_over_seeds():
    table, markdown = tabulate({"table12-seed0": _compare(1.0, 1.3), "table12-seed1": _compare(1.2, 1.1),
                                "table12-seed2": _compare(1.1, 1.5)})
    delta = table["summary"]["delta.CIDEr"]
    assert delta["mean"] == pytest.approx((0.3 - 0.1 + 0.4) / 3)
    assert delta["std"] == pytest.approx(0.2646, abs=1e-4)  # sample std of 0.3, -0.1, 0.4
    assert table["summary"]["baseline.CIDEr"]["mean"] == pytest.approx(1.1)
    assert "| CIDEr | 1.100 ± 0.100 | 1.300 ± 0.200 | 0.200 ± 0.265 | 2 of 3 |" in markdown
    assert "| table12-seed1 | 1.200 / 1.100 |" in markdown


def test_each_ablation_row_holds_the_papers_direction_beside_ours():
    from bench.ablations import markdown, rows

    default = _compare(1.2, 1.36)
    table = rows(default, {"ablation-beam": _compare(1.2, 1.40), "ablation-continue": _compare(1.2, 1.30)})
    beam, cont = table
    assert beam["ours"] == "the ablation is better on CIDEr" and beam["paper"].startswith("nucleus is better")
    assert cont["ours"] == "the default is better or equal on both"
    assert "| ablation-continue | Table 13:" in markdown(table) and "1.360 / 1.300" in markdown(table)
