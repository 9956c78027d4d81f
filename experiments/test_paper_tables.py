"""The paper-table scripts' arithmetic: experiments/table12.py over seeds, experiments/ablations.py against the default."""

from __future__ import annotations

import pytest

from experiments.table12 import tabulate


def _compare(cider_base: float, cider_boot: float, noise_ratio: float = 0.25) -> dict:
    other = {"BLEU-4": 0.4, "txt_r1": 40.0, "img_r1": 20.0, "r_mean": 58.0}
    return {"baseline": {"CIDEr": cider_base, **other}, "bootstrapped": {"CIDEr": cider_boot, **other},
            "capfilt": {"noise_ratio": noise_ratio}}


def test_mean_std_and_wins_over_seeds():
    table, markdown = tabulate({"table12-seed0": _compare(1.0, 1.3), "table12-seed1": _compare(1.2, 1.1),
                                "table12-seed2": _compare(1.1, 1.5)})
    delta = table["summary"]["delta.CIDEr"]
    assert delta["mean"] == pytest.approx((0.3 - 0.1 + 0.4) / 3)
    assert delta["std"] == pytest.approx(0.2646, abs=1e-4)  # sample std of 0.3, -0.1, 0.4
    assert table["summary"]["baseline.CIDEr"]["mean"] == pytest.approx(1.1)
    assert "| CIDEr | 1.100 ± 0.100 | 1.300 ± 0.200 | +0.200 ± 0.265 | 2 of 3 |" in markdown
    assert "| table12-seed1 | 1.200 / 1.100 |" in markdown


def test_each_ablation_row_holds_the_papers_direction_beside_ours():
    from experiments.ablations import markdown, rows

    default = _compare(1.2, 1.36, noise_ratio=0.47)
    table = rows(default, {"ablation-beam": _compare(1.2, 1.40), "ablation-continue": _compare(1.2, 1.30),
                           "ablation-shared": _compare(1.2, 1.20, noise_ratio=0.08)})
    beam, cont, shared = table
    assert beam["ours"] == "the ablation is better on CIDEr" and beam["paper"].startswith("nucleus is better")
    assert cont["ours"] == "the default is better or equal on both"
    assert shared["noise_ratio"] == (0.47, 0.08) and "noise ratio 8% against 25%" in shared["paper"]
    seeds, _ = tabulate({f"table12-seed{i}": _compare(1.0 + i / 10, 1.1 + i / 10) for i in range(3)})
    text = markdown(table, seeds)
    assert "| ablation-continue | Table 13:" in text and "1.360 / 1.300" in text
    assert "| 1.360 / 1.200 | 58.000 / 58.000 | 47.0% / 8.0% |" in text  # the shared row: CIDEr, R mean, noise ratio
    assert "| table12 (3 seeds, means) |" in text and "CIDEr +0.100 ± 0.000" in text
    assert "spread over seeds (Table 12's baseline arm) is CIDEr ± 0.100" in text


def test_compare_shows_table12_only_beside_the_chain_it_ran_on():
    from blip.evaluate.compare import compare_table

    result = _compare(1.2, 1.36)
    for arm in ("baseline", "bootstrapped"):
        result[arm]["CIDEr_other_image"] = 0.45
    seeds, _ = tabulate({f"table12-seed{i}": _compare(1.0, 1.2) for i in range(3)})
    chain = {"data": {"web_shards": None}, "world": {"image_size": 96}, "preset": "tiny"}
    seeds.update(chain=chain, steps_per_epoch=136, bootstrapped_samples=4356)
    shown = compare_table(result, chain, seeds)
    assert "Table 12) over 3 seeds" in shown and "| CIDEr | 1.000 ± 0.000 | 1.200 ± 0.000 | +0.200 ± 0.000 | 3 of 3 |" in shown
    other = compare_table(result, {**chain, "data": {"web_shards": "s3://laion/{00000..00099}.tar"}}, seeds)
    assert "Table 12) over" not in other and "has not run on this data: `make table12`" in other
