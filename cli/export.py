"""``gemsearch export``: ONNX files from models, and what is inside them.

torch and onnx are imported only when a subcommand runs, so ``gemsearch --help`` stays light;
``export default`` and ``export inspect`` need no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from gemsearch.cli.options import parse_scales
from gemsearch.models_cache import resolve_model

_MODEL_HELP = (
    "A checkpoint (gemsearch's or cirtorch's), a released cirtorch network name, or BACKBONE-POOLING "
    "for an off-the-shelf ImageNet network, e.g. efficientnet_lite0-gem."
)
_WHITENING = click.Choice(["auto", "ss", "ms", "none"])
_WHITENING_HELP = (
    "Learned whitening to fold in: auto = the one learned for this kind of extraction (ms for several "
    "scales, ss for one), ss, ms, or none."
)


@click.group()
def export() -> None:
    """Export retrieval models to ONNX and check the files.

    One file per model: uint8 RGB images in, L2-normalised descriptors out, with normalisation,
    pooling, learned whitening and (optionally) multi-scale inside the graph and the model manifest
    in its metadata.
    """


@export.command("onnx")
@click.argument("model_spec", metavar="MODEL")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The .onnx file to write (replaced atomically).",
)
@click.option("--name", help="Model name in the manifest, used for index names [default: the file's stem].")
@click.option("--multiscale", is_flag=True, help="Scales 1, 1/sqrt(2), 1/2, combined inside the graph.")
@click.option(
    "--scales",
    callback=parse_scales,
    default="1",
    show_default=True,
    help="Comma-separated scales ('ms' = 1,0.7071,0.5); several are combined inside the graph.",
)
@click.option(
    "--client-side-scales",
    is_flag=True,
    help="With several scales: export the single-scale graph and let the runtime combine them.",
)
@click.option("--whitening", type=_WHITENING, default="auto", show_default=True, help=_WHITENING_HELP)
@click.option("--lw", help="Dataset of the learned whitening, for cirtorch checkpoints with several.")
@click.option("--dims", type=click.IntRange(min=1), help="Keep the first DIMS whitened dimensions.")
@click.option(
    "--input",
    "input_dtype",
    type=click.Choice(["uint8", "float32"]),
    default="uint8",
    show_default=True,
    help="uint8: RGB pixels, mean/std in the graph; float32: normalised images.",
)
@click.option(
    "--fp16", is_flag=True, help="Backbone weights and compute in float16 (for GPUs); I/O unchanged."
)
@click.option(
    "--max-side",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Longer image side the runtime shrinks images to (recorded in the manifest).",
)
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True, help="ONNX opset.")
@click.option("--dynamo", is_flag=True, help="Use torch.export instead of the (faster) TorchScript exporter.")
@click.option("--training-data", help="Provenance: what the model was trained on.")
@click.option("--epochs", type=click.IntRange(min=0), help="Provenance: training epochs.")
@click.option(
    "--evaluation",
    "evaluation_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of evaluation results (dataset, protocol, mean_ap, mp_at, multiscale).",
)
@click.option(
    "--check",
    "run_check",
    is_flag=True,
    help="Then compare the file with the model, as 'gemsearch export check' does (for --fp16: its "
    "deviation from fp32), and exit with status 1 over the tolerance.",
)
def export_onnx_command(
    model_spec: str,
    output: Path,
    name: str | None,
    multiscale: bool,
    scales: tuple[float, ...],
    client_side_scales: bool,
    whitening: str,
    lw: str | None,
    dims: int | None,
    input_dtype: str,
    fp16: bool,
    max_side: int,
    opset: int,
    dynamo: bool,
    training_data: str | None,
    epochs: int | None,
    evaluation_json: Path | None,
    run_check: bool,
) -> None:
    """Export MODEL to one ONNX file and print its manifest.

    \b
    Examples:
      gemsearch export onnx efficientnet_lite0-gem -o lite0-gem.onnx
      gemsearch export onnx trained.ckpt -o sfm.onnx --multiscale --dims 512 --fp16
    """
    from gemsearch._deps import require

    require("torch", "train")
    require("onnx", "train")
    from gemsearch import __version__
    from gemsearch.manifest import Provenance
    from gemsearch.trainer.models.loading import load_model

    from ..exporters.export import export_onnx

    model = load_model(model_spec, lw=lw)
    if multiscale:
        from gemsearch.preprocess import MULTISCALE

        scales = MULTISCALE
    evaluation = _evaluation(evaluation_json) if evaluation_json is not None else []
    provenance = Provenance(
        base_weights=model.origin, training_data=training_data, epochs=epochs, gemsearch_version=__version__
    )
    manifest = export_onnx(
        model,
        output,
        name=name or output.stem.lower(),
        scales=scales,
        multiscale_in_graph=len(scales) > 1 and not client_side_scales,
        whitening=None if whitening == "none" else whitening,
        dims=dims,
        input_dtype=input_dtype,  # click.Choice checked it
        precision="fp16" if fp16 else "fp32",
        max_side=max_side,
        opset=opset,
        exporter="dynamo" if dynamo else "torchscript",
        provenance=provenance,
        evaluation=evaluation,
    )
    click.echo(json.dumps(json.loads(manifest.to_json()), indent=2))
    click.echo(f"wrote {output} ({_size(output)}, version {manifest.version8})", err=True)
    if run_check:
        from ..exporters.check import check_export

        whitening_choice = None if whitening == "none" else whitening
        _verdict(check_export(output, model, whitening=whitening_choice))  # type: ignore[arg-type]


def _model_file(_ctx: click.Context, _param: click.Parameter, value: str) -> Path:
    """An exported model's path, from a path or a cached model's name, as ``--model`` takes it."""
    return resolve_model(value)


@export.command("inspect")
@click.argument("file", callback=_model_file)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: manifest, inputs, outputs, bytes.")
def inspect_command(file: Path, as_json: bool) -> None:
    """Print the manifest, inputs, outputs and size of an exported FILE (needs no torch).

    FILE is an .onnx file or the name of one in $GEMSEARCH_CACHE/models (e.g. lite0-gem).
    """
    from gemsearch.onnx_manifest import manifest_of_session, metadata_session

    session = metadata_session(file)
    manifest = manifest_of_session(session, str(file))
    info: dict[str, Any] = {
        "file": str(file),
        "bytes": file.stat().st_size,
        "manifest": json.loads(manifest.to_json()),
        "inputs": [_io(v) for v in session.get_inputs()],
        "outputs": [_io(v) for v in session.get_outputs()],
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{file}: {_size(file)}")
    for line in _summary(manifest):
        click.echo(line)
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            click.echo(f"{kind[:-1]} {v['name']}: {v['type']} {v['shape']}")
    click.echo("full manifest:")
    click.echo(json.dumps(info["manifest"], indent=2))


@export.command("check")
@click.argument("file", callback=_model_file)
@click.option(
    "--against", "model_spec", required=True, help="The model FILE was exported from. " + _MODEL_HELP
)
@click.option("--lw", help="Dataset of the learned whitening, for cirtorch checkpoints with several.")
@click.option(
    "--whitening",
    type=_WHITENING,
    default="auto",
    show_default=True,
    help="The whitening choice made at export.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    help="Largest max abs difference allowed [default: 1e-4 for fp32, 2e-2 for fp16].",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(-1, 1),
    help="Smallest cosine allowed [default: 0.9999 for fp32, 0.999 for fp16].",
)
@click.option(
    "--image",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also compare on this image (repeatable).",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="onnxruntime provider to check, e.g. CPUExecutionProvider (repeatable) [default: CPU and CUDA "
    "where present].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def check_command(
    file: Path,
    model_spec: str,
    lw: str | None,
    whitening: str,
    tolerance: float | None,
    min_cosine: float | None,
    image_paths: tuple[Path, ...],
    providers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Check FILE: onnx.checker, onnxruntime (CPU, and CUDA where present), and descriptors against
    PyTorch on random and real images of several sizes and aspect ratios.

    Prints the max abs difference and min cosine per provider; exits with status 1 when they are
    over the tolerance. FILE is an .onnx file or the name of one in $GEMSEARCH_CACHE/models.
    """
    from gemsearch._deps import require

    require("torch", "train")
    require("onnx", "train")
    from gemsearch.trainer.models.loading import load_model

    from ..exporters.check import check_export, check_images

    report = check_export(
        file,
        load_model(model_spec, lw=lw),
        whitening=None if whitening == "none" else whitening,  # type: ignore[arg-type]
        tolerance=tolerance,
        min_cosine=min_cosine,
        images=check_images(image_paths),
        providers=providers or None,
    )
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        for provider in report.providers:
            for case in provider.cases:
                click.echo(
                    f"{provider.provider:<22} {case.label:<28} {case.height:>5}x{case.width:<5} "
                    f"max abs diff {case.max_abs_diff:.2e}  cosine {case.cosine:.6f}"
                )
            click.echo(
                f"{provider.provider}: max abs diff {provider.max_abs_diff:.2e}, "
                f"min cosine {provider.min_cosine:.6f} over {len(provider.cases)} images"
            )
    _verdict(report)


@export.command("default")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the model file [default: $GEMSEARCH_CACHE/models or ~/.cache/gemsearch/models].",
)
@click.option(
    "--from-torch",
    is_flag=True,
    help="Export it with torch's ONNX exporter instead (needs the train extra), replacing any copy; "
    "the file gives the same descriptors and model version.",
)
def default_command(output_dir: Path | None, from_torch: bool) -> None:
    """Build the default model (EfficientNet-Lite0 ImageNet + GeM, off the shelf) unless a valid copy
    exists, and print its path.

    The file is built from the weights with onnx and numpy alone: no torch needed.
    """
    if from_torch:
        from ..default_model import DEFAULT_MODEL_NAME, default_model_dir
        from ..exporters.default_model import export_default_model

        path = (output_dir or default_model_dir()) / f"{DEFAULT_MODEL_NAME}.onnx"
        export_default_model(path)
    else:
        from ..default_model import ensure_default_model

        path = ensure_default_model(output_dir)
    click.echo(str(path))


def _verdict(report: Any) -> None:
    """The summary line of a ``CheckReport``; exit status 1 when it failed."""
    verdict = "PASS" if report.passed else "FAIL"
    click.echo(
        f"{verdict}: max abs diff {report.max_abs_diff:.2e} (tolerance {report.tolerance:.1e}), "
        f"min cosine {report.min_cosine:.6f} (required {report.min_cosine_required})",
        err=True,
    )
    if not report.passed:
        raise SystemExit(1)


def _evaluation(path: Path) -> list[Any]:
    from pydantic import TypeAdapter, ValidationError

    from gemsearch.errors import ConfigError
    from gemsearch.manifest import EvalResult

    try:
        return list(TypeAdapter(list[EvalResult]).validate_json(path.read_bytes()))
    except ValidationError as exc:
        raise ConfigError(f"{path}: not a JSON list of evaluation results ({exc})") from exc


def _summary(manifest: Any) -> list[str]:
    """A few readable lines about a ``ModelManifest``."""
    pooling = manifest.pooling.kind + (f" p={manifest.pooling.p:.4f}" if manifest.pooling.p else "")
    w, ms, spec = manifest.whitening, manifest.multiscale, manifest.input
    whitening = (
        f"{w.kind} {w.input_dim}->{w.output_dim} ({w.learned_from or 'source unknown'})" if w else "none"
    )
    where = "in the graph" if ms.in_graph else ("by the runtime" if len(ms.scales) > 1 else "single scale")
    normalised = "applied in the graph" if spec.normalize_in_graph else "applied by the caller"
    return [
        f"model {manifest.name}, version {manifest.version}",
        f"backbone {manifest.backbone}, pooling {pooling}, {manifest.output_dim} dims, {manifest.precision}",
        f"whitening {whitening}",
        f"scales {', '.join(f'{s:.4g}' for s in ms.scales)} (msp {ms.msp:.4g}, {where})",
        f"input {spec.dtype} {spec.layout} {spec.color}, max side {spec.max_side}, "
        f"mean {_floats(spec.mean)}, std {_floats(spec.std)} ({normalised})",
        *(f"evaluation {r.dataset} ({r.protocol}): mAP {r.mean_ap:.4f}" for r in manifest.evaluation),
    ]


def _io(value: Any) -> dict[str, Any]:
    return {
        "name": value.name,
        "type": value.type,
        "shape": [d if d is not None else "?" for d in value.shape],
    }


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def _floats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
