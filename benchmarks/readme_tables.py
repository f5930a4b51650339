"""The benchmark tables of README.md and docs/benchmarks.md, generated from the committed reference run.

    python benchmarks/readme_tables.py            # rewrite the blocks between the marker comments
    python benchmarks/readme_tables.py --check    # exit 1 if a block differs from what the summary gives

Each block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` and is made only from
``benchmarks/reference/summary.json`` (written by ``run_all.py --reference``), so every figure in
it can be traced to that file, and ``tests/test_readme_tables.py`` fails when a block and the file
disagree. It also writes the planner's shipped copy of the k-NN reference runs
(``gemsearch/plugin/stores/opensearch/knn_measured.json``, from ``benchmarks/reference/knn_scale_*.json``),
which ``gemsearch index plan`` reads when no ``--measured`` file is given.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemsearch.plugin.stores.opensearch import sizing

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUMMARY = HERE / "reference" / "summary.json"
BANDS = REPO / "plugin" / "stores" / "opensearch" / sizing.BANDS_FILE.name  # the source tree's copy
NAMES = {"lite0-gem": "Lite0-GeM", "resnet50-gem": "ResNet50-GeM"}
SETS = {  # run_all's benchmark -> how the tables name its images
    "embed_photos": "real photos: Debian wallpapers",
    "embed_throughput": "small images: views of scikit-image's photos",
}


def _rate(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _sides(data: dict[str, Any]) -> str:
    """``1280-5120 px``: the range of the images' longer sides."""
    longer = [max(int(v) for v in size.split("x")) for size in data["image_sizes"]]
    return f"{min(longer)}-{max(longer)} px" if min(longer) != max(longer) else f"{longer[0]} px"


def _parity(row: dict[str, Any]) -> str:
    if "min_cosine_vs_baseline" in row:
        return f"{row['min_cosine_vs_baseline']:.5f} ({row['parity_images_checked']} descriptors)"
    return "speed only (random weights)"


def _caption(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    load = m["load_average_1_5_15"][0]
    return (
        f"Reference run of {summary['date_utc']} ([benchmarks/reference/summary.md]"
        f"(benchmarks/reference/summary.md)): {m['cpu']}, {m['usable_cores']} cores, load average "
        f"{load} at the start. Read the ratios, which compare paths run alternately in the same "
        "minutes, not the absolute images/s: those depend on the machine and what else runs on it."
    )


def embed_rows(summary: dict[str, Any]) -> list[str]:
    """One table row per image set, model and mode: baseline, ingest path, ratios, parity."""
    lines = []
    for bench, label in SETS.items():
        data = (summary.get("benchmarks") or {}).get(bench)
        if not data:
            continue
        rows = {(r["model"], r["mode"], r["runner"]): r for r in data["results"] if "error" not in r}
        for model, mode, runner in rows:
            if runner != "onnx" or (model, mode, "torch") not in rows:
                continue
            ours, base = rows[model, mode, "onnx"], rows[model, mode, "torch"]
            tuned = rows.get((model, mode, "torch-1thread"))
            cap = f"shrunk to at most {data['max_side']} px"
            images = f"{label}, {_sides(data)} ({data['images']} per run, {cap})"
            vs_tuned = f"{ours['images_per_s'] / tuned['images_per_s']:.2f}x" if tuned else "-"
            lines.append(
                f"| {images} | {NAMES.get(model, model)} {mode} | {_rate(base['images_per_s'])} "
                f"| {_rate(ours['images_per_s'])} | {ours['ratio_vs_baseline']:.2f}x | {vs_tuned} "
                f"| {data['repeats']} | {_parity(ours)} |"
            )
    return lines


def ingest_rows(summary: dict[str, Any]) -> list[str]:
    """``gemsearch ingest`` of the real photos vs the PyTorch loops (``ingest_throughput --wallpapers``)."""
    data = (summary.get("benchmarks") or {}).get("ingest_photos")
    rows = [r for r in (data or {}).get("results", []) if "images_per_s" in r and "ratio_vs_best_torch" in r]
    return [
        f"| {r['path']} | {_rate(r['images_per_s'])} | {r['ratio_vs_best_torch']:.2f}x "
        f"| {r['peak_rss_mb']:,.0f} |"
        for r in rows
    ]


def readme_block(summary: dict[str, Any]) -> str:
    ingest = ingest_rows(summary)
    if ingest:
        data = summary["benchmarks"]["ingest_photos"]
        ingest = [
            "", f"Ingest of the real photos ({data['images']} per run, into a LocalStore):", "",
            "| path | images/s | vs the faster PyTorch loop | peak RSS MB |", "|---|---|---|---|", *ingest,
        ]  # fmt: skip
    header = (
        "| images | model | plain PyTorch loop, images/s | gemsearch ingest path, images/s | speed-up "
        "| vs PyTorch with 1 thread | runs (median) | same descriptors: lowest cosine |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([
        _caption(summary), "", header, *embed_rows(summary), *ingest, "",
        "GPU: not measured yet (no GPU machine has run `scripts/gpu_check.sh`).",
    ])  # fmt: skip


def docs_embed_block(summary: dict[str, Any]) -> str:
    """Every path of every image set, as ``embed_throughput.py`` tabulates it."""
    sys.path.insert(0, str(HERE))
    from embed_throughput import table

    parts = [_caption(summary).replace("](benchmarks/", "](../benchmarks/"), ""]
    for bench, label in SETS.items():
        data = (summary.get("benchmarks") or {}).get(bench)
        if not data:
            continue
        sizes = ", ".join(f"{n} x {size}" for size, n in data["image_sizes"].items())
        parts += [
            f"**{label[0].upper()}{label[1:]}** ({data['images']} per run, {data['repeats']} alternating "
            f"runs per path, shrunk to at most {data['max_side']} px; sizes: {sizes}):", "",
            table(data["results"]), "",
        ]  # fmt: skip
    return "\n".join(parts).rstrip()


def docs_ingest_block(summary: dict[str, Any]) -> str:
    """The real-photo ingest of the reference run, every path, as ``ingest_throughput.py`` tabulates it."""
    data = (summary.get("benchmarks") or {}).get("ingest_photos")
    if not data:
        return "Not in the reference run."
    sys.path.insert(0, str(HERE))
    from ingest_throughput import real_photos_table

    m = data["machine"]
    return "\n".join([
        f"Reference run of {m['date_utc']} "
        "([benchmarks/reference/summary.md](../benchmarks/reference/summary.md), "
        f"`{' '.join(['ingest_throughput.py', *_args(summary, 'ingest_photos')])}`): {m['cpu']}, "
        f"{m['usable_cores']} cores, load average {m['load_average_1_5_15'][0]} at the start; "
        f"{data['images']} photos per run, {data['repeats']} alternating runs per path (medians), shrunk "
        f"to at most {data['max_side']} px. Targets: >= {data['target_ratio']}x the best PyTorch loop at "
        f"<= {data['target_peak_rss_mb']} MB peak RSS.",
        "",
        real_photos_table(data["results"]),
    ])  # fmt: skip


def _args(summary: dict[str, Any], name: str) -> list[str]:
    return next((list(r.get("args", [])) for r in summary["runs"] if r["name"] == name), [])


@functools.cache  # every block reads the same files: once per run of this script
def knn_runs() -> list[dict[str, Any]]:
    return sizing.load_measurements(sorted((HERE / "reference").glob("knn_scale_*.json")))


def _ef(cfg: dict[str, Any], k: int, ef: int) -> dict[str, Any] | None:
    return next((q for q in cfg["queries"] if q["k"] == k and q["ef_search"] == ef), None)


def sizing_block(_summary: dict[str, Any], docs: int = 1_000_000) -> str:
    """Per measured configuration, from the largest run that has it: the plan for ``docs`` vectors
    (formulas) beside what the run measured."""
    best: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for run in knn_runs():
        for cfg in run["configs"]:
            if "error" not in cfg and run["docs"] > best.get(cfg["name"], ({"docs": 0}, {}))[0]["docs"]:
                best[cfg["name"]] = (run, cfg)
    lines = [
        f"| configuration | vector in `_source` | memory for {docs:,}, formula | disk for {docs:,}, formula "
        "| measured at | searched files, measured | disk, measured | load docs/s "
        "| recall@10 at ef_search 100 / 800 | p50 ms at ef_search 100 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (run, cfg) in sorted(best.items(), key=lambda item: -item[1][0]["docs"]):
        version = run["opensearch"]["version"]
        s = sizing.SizingInput(
            docs=docs, dims=cfg["dims"], m=cfg["m"], encoder=cfg["encoder"],
            vector_in_source=cfg["vector_in_source"], opensearch_major=int(version.split(".")[0]),
        )  # fmt: skip
        in_source = s.keeps_source
        p = sizing.plan(s)
        high, wide = _ef(cfg, 10, 100), _ef(cfg, 10, 800)
        recall = " / ".join(f"{r['recall']:.3f}" if r else "-" for r in (high, wide))
        source = "yes" if in_source else ("no (3.x default)" if cfg["vector_in_source"] else "no")
        lines.append(
            f"| {name} | {source} | {p.memory_per_copy_bytes / 2**30:.1f} GiB "
            f"| {p.disk_per_copy_bytes / 2**30:.1f} GiB | {run['docs']:,} (OpenSearch {version}) "
            f"| {cfg['index']['search_files_mb']:,.0f} MiB | {cfg['index']['store_mb']:,.0f} MiB "
            f"| {cfg['load']['docs_per_s'] or '-'} | {recall} | {high['p50_ms'] if high else '-'} |"
        )
    sources = ", ".join(f"`benchmarks/reference/{Path(r['_path']).name}`" for r in knn_runs())
    return "\n".join([*lines, "", f"Measured columns: {sources}; formulas: `gemsearch index plan`."])


FORMULA_ROWS = [  # (engine, encoder, bits, dims, m, vector in _source, OpenSearch major, label)
    ("lucene", "none", 1, 1280, 16, True, 2, "none (float32)"),
    ("lucene", "none", 1, 1280, 16, False, 2, "none (float32)"),
    ("lucene", "none", 1, 1280, 16, True, 3, "none (float32)"),
    ("lucene", "none", 1, 1280, 32, True, 2, "none (float32)"),
    ("lucene", "none", 1, 512, 16, True, 2, "none (float32)"),
    ("lucene", "none", 1, 256, 16, True, 2, "none (float32)"),
    ("lucene", "sq", 1, 1280, 16, True, 2, "sq (int7)"),
    ("lucene", "byte", 1, 1280, 16, True, 2, "byte vectors"),
    ("faiss", "none", 1, 1280, 16, True, 2, "none"),
    ("faiss", "sq", 1, 1280, 16, True, 2, "sq (fp16)"),
    ("faiss", "binary", 1, 1280, 16, False, 2, "binary 1-bit (on-disk mode's default, 32x)"),
    ("faiss", "binary", 2, 1280, 16, False, 2, "binary 2-bit (16x)"),
    ("faiss", "binary", 4, 1280, 16, False, 2, "binary 4-bit (8x)"),
]


def formula_block(_summary: dict[str, Any], docs: int = 1_000_000) -> str:
    """``gemsearch index plan`` for common builds of ``docs`` vectors."""
    lines = [
        "| engine | encoder | dims | m | OpenSearch | vector in `_source` | memory GiB (formula) "
        "| disk GiB (formula) | primaries |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, encoder, bits, dims, m, in_source, major, label in FORMULA_ROWS:
        s = sizing.SizingInput(
            docs=docs, dims=dims, m=m, engine=engine, encoder=encoder, bits=bits,  # type: ignore[arg-type]
            vector_in_source=in_source, opensearch_major=major,
        )  # fmt: skip
        p = sizing.plan(s)
        name = "faiss (not measured)" if engine == "faiss" else engine
        lines.append(
            f"| {name} | {label} | {dims} | {m} | {major}.x | {'yes' if s.keeps_source else 'no'} "
            f"| {p.memory_per_copy_bytes / 2**30:.2f} | {p.disk_per_copy_bytes / 2**30:.1f} "
            f"| {p.primary_shards} |"
        )
    return "\n".join(lines)


def measured_block(_summary: dict[str, Any]) -> str:
    """Every configuration of every k-NN reference run, largest runs first."""
    lines = [
        "| config | vectors | OpenSearch | load docs/s | force-merge s | disk MiB | searched files MiB, "
        "measured / formula | recall@10 at ef_search 10 / 100 | recall@100 at ef_search 100 "
        "| k=10 p50 / p99 ms at ef_search 100 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(knn_runs(), key=lambda r: -r["docs"]):
        for cfg in run["configs"]:
            if "error" in cfg:
                continue
            low, high, wide = _ef(cfg, 10, 10), _ef(cfg, 10, 100), _ef(cfg, 100, 100)
            load = cfg["load"]
            lines.append(
                f"| {cfg['name']} | {run['docs']:,} | {run['opensearch']['version']} "
                f"| {load['docs_per_s'] or '-'} | {load['force_merge_s']:,.0f} "
                f"| {cfg['index']['store_mb']:,.0f} "
                f"| {cfg['index']['search_files_mb']:,.1f} / {cfg['formula_memory_mb']:,.1f} "
                f"| {low['recall']:.3f} / {high['recall']:.3f} | {wide['recall']:.3f} "
                f"| {high['p50_ms']:.0f} / {high['p99_ms']:.0f} |"
                if low and high and wide
                else f"| {cfg['name']} | {run['docs']:,} | (incomplete) |"
            )
    return "\n".join(lines)


BLOCKS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "README.md": {"benchmarks": readme_block, "sizing": sizing_block},
    "docs/benchmarks.md": {"benchmarks:embed": docs_embed_block, "benchmarks:ingest": docs_ingest_block},
    "docs/opensearch.md": {"sizing:formula": formula_block, "sizing:measured": measured_block},
}


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the ``name`` markers replaced by ``body``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected one {begin} ... {end} block")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(path: Path, summary: dict[str, Any]) -> str:
    """The file at ``path`` with its blocks regenerated from ``summary``."""
    text = path.read_text()
    for name, make in BLOCKS[str(path.relative_to(REPO))].items():
        text = replace_block(text, name, make(summary))
    return text


def bands_text() -> str:
    """The planner's copy of the k-NN reference runs, as it should be in the package."""
    return json.dumps(sizing.band_digest(knn_runs()), indent=1) + "\n"


def bands_current(write: bool) -> bool:
    text, path = bands_text(), BANDS
    current = path.is_file() and path.read_text() == text
    if write and not current:
        path.write_text(text)
    return current


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    ap.add_argument(
        "--summary", type=Path, default=SUMMARY, help="default: benchmarks/reference/summary.json"
    )
    args = ap.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    stale = [] if bands_current(write=not args.check) else [str(BANDS.relative_to(REPO))]
    for rel in BLOCKS:
        path = REPO / rel
        new = render(path, summary)
        if new != path.read_text():
            stale.append(rel)
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "up to date", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
