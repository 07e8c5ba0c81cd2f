"""PNG plots of benchmark results (matplotlib, the ``bench`` extra).

    replay bench plot docs/results --out docs/plots

Reads the JSON files `replay bench ...` wrote (ingest, sample, footprint) and
draws one figure each; a missing result is skipped, so the plots follow
whatever was measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {
    "replay": "replay",
    "png_file": "PNG file/frame",
    "jpeg_file": "JPEG file/frame",
    "raw_memmap": "numpy.memmap (raw)",
    "torchrl": "TorchRL LazyMemmap",
    "zarr_naive": "zarr-python, naive",
}


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    matches = sorted(folder.glob(f"{name}*.json"))
    if not matches:
        return None
    doc: dict[str, Any] = json.loads(matches[0].read_text())
    return doc


def _caption(doc: dict[str, Any]) -> str:
    machine = doc.get("machine", {})
    cores, cpu = machine.get("cores"), machine.get("cpu")
    return f"{cores} cores, {cpu} - {doc.get('date')} - commit {doc.get('commit')}"


def _save(fig: Any, doc: dict[str, Any], path: Path) -> Path:
    """Caption the figure with where and when it was measured, write it, free it."""
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.01, _caption(doc), fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ingest(doc: dict[str, Any], out: Path) -> Path:
    """Append latency p50/p99 per approach (log scale)."""
    import matplotlib.pyplot as plt

    results = doc["results"]
    names = [n for n in LABELS if isinstance(results.get(n), dict)]
    p50 = [results[n]["append"]["p50_us"] / 1000 for n in names]
    p99 = [results[n]["append"]["p99_us"] / 1000 for n in names]
    fig, ax = plt.subplots(figsize=(9.5, 4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    ax.axhline(33.3, color="red", linestyle="--", linewidth=1, label="30 FPS frame budget")
    ax.set_yscale("log")
    ax.set_xticks(list(x), [LABELS[n] for n in names], rotation=20, ha="right")
    ax.set_ylabel("driver-visible time per frame (ms)")
    ax.set_title("Ingest: what the driver pays per 1600x900 frame")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the bars
    return _save(fig, doc, out / "ingest-latency.png")


def plot_footprint(doc: dict[str, Any], out: Path) -> Path:
    """Bytes per frame against PSNR for each quality, one line per game and subsampling."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = []
    for game, result in doc["results"]["games"].items():
        for n, sub in enumerate(sorted({r["subsampling"] for r in result["settings"]})):
            rows = sorted(
                (r for r in result["settings"] if r["subsampling"] == sub),
                key=lambda r: r["quality"],
            )
            xs = [r["bytes_per_frame"] / 1000 for r in rows]
            ys = [r["psnr_db"] for r in rows]
            ax.plot(xs, ys, marker="o", label=f"{game} 4:{sub[1]}:{sub[2]}")
            for r, x, y in zip(rows, xs, ys, strict=True):
                labels.append(
                    ax.annotate(
                        f"q{r['quality']}",
                        (x, y),
                        fontsize=7,
                        xytext=(4, -10) if n % 2 == 0 else (-6, 5),  # lines' labels apart
                        textcoords="offset points",
                        ha="left" if n % 2 == 0 else "right",
                    )
                )
    ax.axhline(38, color="red", linestyle="--", linewidth=1, label="38 dB target")
    ax.set_xscale("log")
    ax.set_xlabel("KB per 1600x900 frame on disk (raw: 4,320 KB)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Quality vs size, JPEG")
    ax.legend(fontsize=8)
    _drop_overlapping(fig, labels)
    return _save(fig, doc, out / "quality-size.png")


def _drop_overlapping(fig: Any, texts: list[Any]) -> None:
    """Hide each text that would overprint one drawn before it (the plot keeps its point)."""
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    kept: list[Any] = []
    for text in texts:
        box = text.get_window_extent(renderer).expanded(1.05, 1.1)
        if any(box.overlaps(other) for other in kept):
            text.set_visible(False)
        else:
            kept.append(box)


def plot_sampling(doc: dict[str, Any], out: Path) -> Path:
    """Frames/s of batch sampling, warm and cold page cache, per approach."""
    import matplotlib.pyplot as plt

    approaches = {k: v for k, v in doc["results"]["approaches"].items() if isinstance(v, dict)}
    rows = [(LABELS.get(name, name), name, "batch") for name in approaches]
    if "quarter_warm" in approaches.get("replay", {}):
        rows.insert(1, ("replay, 1/4 size (DCT)", "replay", "quarter"))

    def fps(name: str, figure: str) -> float:
        value = approaches[name].get(figure)
        return float(value["frames_per_s"]) if isinstance(value, dict) else 0.0

    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(rows))
    ax.bar(
        [i - 0.2 for i in x],
        [fps(n, f"{v}_warm") for _, n, v in rows],
        width=0.4,
        label="warm page cache",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [fps(n, f"{v}_cold") for _, n, v in rows],
        width=0.4,
        label="cold (not measured where 0)",
    )
    ax.set_xticks(list(x), [label for label, _, _ in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("frames/s into a batch of 64")
    ax.set_title("Sampling 1600x900 frames")
    ax.legend(fontsize=8)
    return _save(fig, doc, out / "sampling.png")


def plot_scaling(doc: dict[str, Any], out: Path) -> Path:
    """Sampling frames/s against store size; ingest and sampling against processes."""
    import matplotlib.pyplot as plt

    r = doc["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = r["store_size"]
    left.plot([s["frames"] for s in sizes], [s["frames_per_s"] for s in sizes], marker="o")
    left.set_xscale("log")
    left.set_xlabel("frames in the store")
    left.set_ylabel("sampling frames/s (one process)")
    left.set_ylim(bottom=0)
    left.set_title("Sampling vs store size")
    for name, label in (("writers", "ingest (writers)"), ("readers", "sampling (readers)")):
        rows = r[name]
        right.plot(
            [x["processes"] for x in rows],
            [x["frames_per_s"] for x in rows],
            marker="o",
            label=label,
        )
    right.set_xlabel("concurrent processes")
    right.set_ylabel("aggregate frames/s")
    right.set_ylim(bottom=0)
    right.set_title("Concurrency")
    right.legend()
    return _save(fig, doc, out / "scaling.png")


def plot_keys(doc: dict[str, Any], out: Path) -> Path:
    """Key-drawing latency (p50) against store size: replay vs TorchRL's samplers."""
    import matplotlib.pyplot as plt

    rows = doc["results"]["sizes"]
    frames = [r["frames"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    series = [
        ("replay", "sequences_us", "replay, 16 x 4 windows"),
        ("replay", "uniform_us", "replay, uniform 64"),
        ("replay", "prioritized_us", "replay, prioritized 64"),
        ("torchrl", "slice_us", "TorchRL SliceSampler, 16 x 4"),
        ("torchrl", "slice_cached_us", "TorchRL SliceSampler (cache_values), 16 x 4"),
        ("torchrl", "prioritized_us", "TorchRL PrioritizedSampler, 64"),
    ]
    for system, key, label in series:
        if all(key in r.get(system, {}) for r in rows):
            style = "-" if system == "replay" else "--"
            ax.plot(
                frames, [r[system][key]["p50"] / 1e3 for r in rows], style, marker="o", label=label
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frames in the store")
    ax.set_ylabel("ms to choose one batch (p50)")
    ax.set_title("Choosing a batch's keys as the store grows")
    ax.legend(fontsize=8)
    return _save(fig, doc, out / "keys.png")


def plot_all(results: Path, out: Path) -> list[Path]:
    """Every plot whose results exist in `results`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        ("ingest", plot_ingest),
        ("footprint", plot_footprint),
        ("sample", plot_sampling),
        ("scaling", plot_scaling),
        ("keys", plot_keys),
    ):
        doc = _load(results, name)
        if doc is not None:
            written.append(draw(doc, out))
    return written
