"""Memory of ``gemsearch serve`` under load: the server process's peak RSS through three loads.

    python benchmarks/serve_soak.py                       # 6000x6500 photos, about 2 minutes
    python benchmarks/serve_soak.py --side 2000 --requests 40 --ceiling-mb 700    # a quick check

Starts ``gemsearch serve`` as a subprocess on 127.0.0.1 over a LocalStore with a tiny real ONNX
model (the tests' model, built without torch) and serves a folder of large generated photos
(``--photos`` JPEGs of ``--side`` x ``1.083 * --side`` pixels). Then, one after the other:

- ``thumbnails``: ``--thumbs`` requests at once for the thumbnails of the photos, cache cold;
- ``uploads``: ``--uploads`` searches at once, each uploading a 16-bit greyscale PNG of
  ``--png-side`` pixels square (default 1.05 ``--side``: 6300, just under the 40-megapixel limit);
- ``mixed``: ``--requests`` requests, ``--concurrency`` in flight: uploads (large JPEG, 16-bit
  PNG, small JPEG), searches by id, thumbnails and full images of new photos, health, models.

The server's RSS is sampled every 10 ms; each load reports its peak and the RSS once it has ended
(``settled``: what the server kept). ``--ceiling-mb`` makes the exit status 1 when a peak is over it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from _common import REPO, markdown_table, status_kb, write_results
from PIL import Image

Request = Callable[[str], int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photo(side: int, seed: int) -> Image.Image:
    """A ``side`` x ``1.083 side`` RGB photo: smooth noise with grain, so the JPEG stays small."""
    rng = np.random.default_rng(seed)
    height = side * 13 // 12
    coarse = rng.integers(0, 256, (height // 50 + 1, side // 50 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((side, height), Image.Resampling.BILINEAR)
    grain = rng.integers(-6, 7, (height, side, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + grain, 0, 255).astype(np.uint8))


def png16(side: int) -> bytes:
    """A ``side`` x ``side`` 16-bit greyscale PNG (mode I;16): a smooth ramp, a few MB."""
    ramp = np.linspace(0, 65535, side, dtype=np.float64)
    values = ((ramp[:, None] + ramp[None, :]) / 2).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(values).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def prepare(root: Path, side: int, photos: int, png_side: int) -> dict[str, Any]:
    """The model, the photos (for thumbnails now and later), the store and the upload payloads."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.onnx_models import make_tiny_model

    from gemsearch.plugin.embedding.embedder import OnnxEmbedder
    from gemsearch.plugin.stores.local.store import LocalStore
    from gemsearch.protocols import Record

    make_tiny_model(root / "tiny.onnx", dim=32, seed=1)
    (root / "photos").mkdir()
    names = [f"cold{i}.jpg" for i in range(photos)] + [f"mixed{i}.jpg" for i in range(photos)]
    embedder = OnnxEmbedder(root / "tiny.onnx")
    small = Image.new("RGB", (64, 64), (90, 140, 30))
    vector = embedder.embed([small])[0]
    records = []
    for i, name in enumerate(names):
        data = jpeg(photo(side, seed=i))
        (root / "photos" / name).write_bytes(data)
        records.append(Record(id=name, vector=vector, image_ref=name, metadata={"i": i}))
    with LocalStore(root / "store") as store:
        store.ensure_index(embedder.manifest)
        store.upsert(records)
    return {
        "cold": names[:photos],
        "mixed": names[photos:],
        "png16": png16(png_side),
        "big_jpeg": jpeg(photo(side, seed=99)),
        "small_jpeg": jpeg(photo(400, seed=7)),
    }


def write_config(root: Path) -> Path:
    config = {
        "models": [{"path": "tiny.onnx", "store": {"kind": "local", "path": "store"}}],
        "image_roots": ["photos"],
        "limits": {"searches_per_minute": 0},  # the loads come from one address
    }
    path = root / "serve.json"
    path.write_text(json.dumps(config))
    return path


@contextmanager
def server(config: Path, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``gemsearch serve --config``; yields the process once /healthz answers."""
    cmd = [sys.executable, "-m", "gemsearch.cli", "serve", "--config", str(config), "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            wait_until_up(proc, port, log)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_until_up(proc: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    import requests

    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return
        except requests.ConnectionError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"serve did not start:\n{log.read().decode()[-3000:]}") from exc
            time.sleep(0.2)


class RssSampler:
    """The peak and the latest RSS of ``pid``, sampled in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb("VmRSS", self.pid))
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, status_kb("VmRSS", self.pid))


def upload(payload: bytes, name: str, **fields: Any) -> Request:
    import requests

    def send(base: str) -> int:
        files = {"image": (name, payload, "application/octet-stream")}
        return requests.post(f"{base}/api/search", files=files, data=fields, timeout=300).status_code

    return send


def get(path: str) -> Request:
    import requests

    def send(base: str) -> int:
        return requests.get(f"{base}{path}", timeout=300).status_code

    return send


def by_id(doc_id: str) -> Request:
    import requests

    def send(base: str) -> int:
        return requests.post(f"{base}/api/search", data={"id": doc_id, "k": 3}, timeout=300).status_code

    return send


def mixed_requests(data: dict[str, Any], n: int, seed: int = 0) -> list[Request]:
    """``n`` requests in a seeded random order; thumbnails and full images of photos not yet seen."""
    kinds: list[Request] = [
        upload(data["big_jpeg"], "big.jpg", k=5),
        upload(data["png16"], "grey16.png", k=5),
        upload(data["small_jpeg"], "small.jpg", k=5, crop="10,10,200,200"),
        by_id(data["cold"][0]),
        get("/healthz"),
        get("/api/models"),
    ]
    kinds += [get(f"/api/images/{name}?size=thumb") for name in data["mixed"]]
    kinds += [get(f"/api/images/{name}?size=full") for name in data["mixed"]]
    rng = random.Random(seed)
    return [rng.choice(kinds) for _ in range(n)]


def run_load(name: str, base: str, pid: int, requests_: list[Request], concurrency: int) -> dict[str, Any]:
    """Send the requests, ``concurrency`` at a time, while sampling the server's RSS."""
    before = status_kb("VmRSS", pid)
    t0 = time.perf_counter()
    with RssSampler(pid) as rss, ThreadPoolExecutor(concurrency) as pool:
        codes = Counter(pool.map(lambda send: send(base), requests_))
    seconds = time.perf_counter() - t0
    time.sleep(1.0)  # what the server keeps once the load is over
    row = {
        "load": name,
        "requests": len(requests_),
        "concurrency": concurrency,
        "seconds": round(seconds, 1),
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(rss.peak_kb / 1024, 1),
        "settled_rss_mb": round(status_kb("VmRSS", pid) / 1024, 1),
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
    }
    print(
        f"{name}: peak {row['peak_rss_mb']:.0f} MB, settled {row['settled_rss_mb']:.0f} MB "
        f"({len(requests_)} requests, {concurrency} at once, {seconds:.1f} s, codes {row['status_codes']})",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=6000, help="width of the photos (height: 13/12 of it)")
    ap.add_argument("--png-side", type=int, default=None, help="side of the 16-bit PNG (default 1.05 --side)")
    ap.add_argument("--photos", type=int, default=3, help="photos asked for by the thumbnail load")
    ap.add_argument("--thumbs", type=int, default=60, help="thumbnail requests, all at once")
    ap.add_argument("--uploads", type=int, default=16, help="16-bit PNG searches, all at once")
    ap.add_argument("--requests", type=int, default=200, help="requests of the mixed load")
    ap.add_argument("--concurrency", type=int, default=20, help="requests in flight in the mixed load")
    ap.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="extra server environment")
    ap.add_argument("--ceiling-mb", type=float, default=None, help="exit 1 when a peak RSS is over it")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="gemsearch-soak-") as tmp:
        root = Path(tmp)
        print(f"generating {2 * args.photos} photos of {args.side} px ...", file=sys.stderr, flush=True)
        data = prepare(root, args.side, args.photos, args.png_side or args.side * 21 // 20)
        port = free_port()
        with server(write_config(root), port, env) as proc:
            base = f"http://127.0.0.1:{port}"
            started = round(status_kb("VmRSS", proc.pid) / 1024, 1)
            cold = [
                get(f"/api/images/{data['cold'][i % args.photos]}?size=thumb") for i in range(args.thumbs)
            ]
            uploads = [upload(data["png16"], "grey16.png", k=5) for _ in range(args.uploads)]
            loads = [
                run_load("thumbnails", base, proc.pid, cold, max(1, args.thumbs)),
                run_load("uploads", base, proc.pid, uploads, max(1, args.uploads)),
                run_load("mixed", base, proc.pid, mixed_requests(data, args.requests), args.concurrency),
            ]
            hwm = round(status_kb("VmHWM", proc.pid) / 1024, 1)
    results = {
        "photo_pixels": [args.side, args.side * 13 // 12],
        "png16_pixels": args.png_side or args.side * 21 // 20,
        "png16_bytes": len(data["png16"]),
        "big_jpeg_bytes": len(data["big_jpeg"]),
        "server_env": env,
        "started_rss_mb": started,
        "server_peak_rss_mb": hwm,
        "ceiling_mb": args.ceiling_mb,
        "loads": loads,
        "settings": {k: v for k, v in vars(args).items() if k != "out_dir"},
    }
    header = ["load", "requests", "in flight", "seconds", "RSS before MB", "peak RSS MB", "settled MB"]
    rows = [
        [r["load"], r["requests"], r["concurrency"], r["seconds"], r["rss_before_mb"], r["peak_rss_mb"],
         r["settled_rss_mb"]]
        for r in loads
    ]  # fmt: skip
    json_path, _ = write_results("serve_soak", results, markdown_table(header, rows), args.out_dir)
    print(f"server RSS at start {started:.0f} MB, peak {hwm:.0f} MB; results in {json_path}")
    over = [r["load"] for r in loads if args.ceiling_mb is not None and r["peak_rss_mb"] > args.ceiling_mb]
    if over:
        print(f"peak RSS over the {args.ceiling_mb:.0f} MB ceiling in: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
