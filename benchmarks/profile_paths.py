"""Where the time goes: pyinstrument profiles of the benchmarked paths, as text and HTML.

    python benchmarks/profile_paths.py embed-torch embed-onnx          # the two embedding paths
    python benchmarks/profile_paths.py ingest-opensearch --images 200  # ingest into a node started here
    python benchmarks/profile_paths.py ingest-local --opensearch http://host:9200

Writes ``profile_<path>.txt`` (call tree, wall time, all threads' main-thread view) and
``profile_<path>.html`` into ``--out-dir`` (default ``benchmarks/results/``). pyinstrument samples
the main thread; the decode threads and onnxruntime's own threads show up as the main thread
waiting for them (``bounded_map``/``result``), which is itself the answer to "who waits for whom".
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from _common import RESULTS, opensearch, sample_paths
from _machine import usable_cores
from embed_throughput import _KeepVectors, onnx_model, run_onnx, run_torch

PATHS = ("embed-torch", "embed-onnx", "ingest-local", "ingest-opensearch")


def profile_one(path: str, args: argparse.Namespace, client: Any) -> Any:
    from pyinstrument import Profiler

    images, _ = sample_paths(args.images)
    profiler = Profiler(interval=0.005)
    if path.startswith("embed"):
        run = run_torch if path == "embed-torch" else run_onnx
        run_args = (args.model, args.mode, images, args.workers, args.max_side, path.split("-")[1])
        run(*run_args)  # warm: exports, caches, first-call costs stay out of the profile
        profiler.start()
        run(*run_args)
        profiler.stop()
        return profiler
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder
    from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
    from gemsearch.plugin.inputs.sources import SourceItem
    from gemsearch.plugin.stores.local.store import LocalStore
    from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
    from gemsearch.plugin.stores.opensearch.store import OpenSearchStore

    embedder = OnnxEmbedder(onnx_model(args.model, args.mode, args.max_side))
    ingest([SourceItem(path=p, id=f"w{i}") for i, p in enumerate(images[:4])], embedder, _KeepVectors())
    tmp = Path(tempfile.mkdtemp(prefix="gemsearch-profile-"))
    prefix = f"bench-profile-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        if path == "ingest-local":
            store: Any = stack.enter_context(LocalStore(tmp / "store"))
        else:
            store = OpenSearchStore(client, options=IndexOptions(prefix=prefix))
            stack.callback(client.indices.delete, index=f"{prefix}-*", params={"expand_wildcards": "all"})
        items = [SourceItem(path=p, id=f"p{i}") for i, p in enumerate(images)]
        profiler.start()
        ingest(items, embedder, store, IngestOptions(workers=args.workers))
        profiler.stop()
    return profiler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", choices=PATHS)
    ap.add_argument("--model", default="lite0-gem")
    ap.add_argument("--mode", default="single-scale", choices=["single-scale", "multi-scale"])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one if needed")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    needs_node = "ingest-opensearch" in args.paths
    node: contextlib.AbstractContextManager[tuple[Any, dict[str, Any]]] = (
        opensearch(args.opensearch) if needs_node else contextlib.nullcontext((None, {}))
    )
    with node as (client, _):
        for path in args.paths:
            profiler = profile_one(path, args, client)
            text = profiler.output_text(unicode=True, color=False, show_all=False)
            (args.out_dir / f"profile_{path}.txt").write_text(text)
            (args.out_dir / f"profile_{path}.html").write_text(profiler.output_html())
            print(f"== {path}\n{text}")


if __name__ == "__main__":
    main()
