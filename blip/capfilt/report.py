"""What CapFilt did, in numbers and in pictures: kept ratios, the paper's noise ratio, and an examples sheet like
the paper's Figure 4 (image, web text, synthetic text; green kept, red removed) as PNG and HTML. How right it
was is known only on the built-in world, whose truth `blip audit` joins to the same counts (`detection`).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from blip.data import storage
from blip.data.ingest import Tally
from blip.data.web import IMAGE_EXTS, read_web_shard


def ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def detection(removed_bad: int, removed: int, bad: int) -> dict:
    """Precision and recall of 'removed' as a detector of bad texts."""
    return {"precision": ratio(removed_bad, removed), "recall": ratio(removed_bad, bad),
            "removed": removed, "bad": bad}


def statistics(counts: dict) -> dict:
    """Counts per source -> the report's figures (None where a figure has no data)."""
    c = lambda k: int(counts.get(k, 0))  # noqa: E731
    out: dict = {}
    for s in ("human", "web", "synthetic"):
        out[s] = {"total": c(f"{s}_total"), "kept": c(f"{s}_kept"), "removed": c(f"{s}_removed"),
                  "kept_ratio": ratio(c(f"{s}_kept"), c(f"{s}_total"))}
    out["web_removed_share"] = ratio(c("web_removed"), c("web_total"))
    # the paper's "noise ratio": the share of synthetic captions the filter judges noisy
    out["noise_ratio"] = ratio(c("synthetic_removed"), c("synthetic_total"))
    out["skipped"] = {k[len("skipped_"):]: v for k, v in counts.items() if k.startswith("skipped_")}
    return out


def example_images(inputs: list[dict], keys: list[str], max_member_bytes: int) -> dict[str, bytes]:
    """Image bytes of the given keys, read from the input shards (`inputs`: their url and samples, as the scores
    manifest records them); stops once all are found."""
    wanted, found = set(keys), {}
    for shard in inputs:
        for key, members in read_web_shard(shard["url"], Tally(), max_member_bytes, shard.get("samples")):
            image = next((members[e] for e in IMAGE_EXTS if e in members), None)
            if key in wanted and image is not None:
                found[key] = image
                if len(found) == len(wanted):
                    return found
    return found


def _thumb(jpeg: bytes | None, side: int = 160) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(jpeg)).convert("RGB") if jpeg else None
    except OSError:
        image = None
    return (image or Image.new("RGB", (side, side), (200, 200, 200))).resize((side, side))


def write_sheet_png(rows: list[dict], images: dict[str, bytes], path: Path) -> None:
    """Figure 4 as a PNG: one row per web image, its texts green (kept) or red (removed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 2, figsize=(10, 1.9 * n), gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    for ax_img, ax_txt in axes:
        ax_img.axis("off"), ax_txt.axis("off")
    for (ax_img, ax_txt), row in zip(axes, rows):
        ax_img.imshow(_thumb(images.get(row["key"])))
        for i, t in enumerate(row["texts"]):
            label = "web" if t["source"] == "web" else "synthetic"
            ax_txt.text(0.0, 0.8 - 0.3 * i, f"{label} ({t['itm']:.2f}): {t['text']}", fontsize=9,
                        color="#1a7f37" if t["kept"] else "#cf222e", transform=ax_txt.transAxes, va="center")
    fig.suptitle("CapFilt examples: green kept, red removed (ITM match probability)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    storage.write_bytes(path, buf.getvalue())


def write_sheet_html(rows: list[dict], images: dict[str, bytes], path: Path, title: str) -> None:
    """Figure 4 as a self-contained HTML page (images inlined), well-formed XHTML-style markup."""
    parts = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8" />',
             f"<title>{html.escape(title)}</title>",
             "<style>td{vertical-align:top;padding:4px}.kept{color:#1a7f37}.removed{color:#cf222e}</style>",
             "</head>", "<body>", f"<h1>{html.escape(title)}</h1>",
             "<table>", "<tr><th>image</th><th>texts (ITM match probability)</th></tr>"]
    for row in rows:
        buf = io.BytesIO()
        _thumb(images.get(row["key"]), 128).save(buf, format="PNG")
        src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        texts = "".join(
            f'<div class="{"kept" if t["kept"] else "removed"}">{t["source"]} ({t["itm"]:.2f}): '
            f'{html.escape(t["text"])}</div>' for t in row["texts"])
        parts.append(f'<tr><td><img src="{src}" alt="{html.escape(row["key"])}" width="128" height="128" /></td>'
                     f"<td>{texts}</td></tr>")
    parts += ["</table>", "</body>", "</html>"]
    storage.write_bytes(path, ("\n".join(parts) + "\n").encode("utf-8"))
