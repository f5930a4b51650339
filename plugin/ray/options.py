"""How a Ray ingest is laid out: actors, batch sizes and the resources each stage asks for."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ...preprocess import DecodeMode
from ..embedding.embedder import default_decode
from ..inputs.images import ImageLoadConfig
from ..stores.opensearch.bulk_models import BulkOptions
from ..stores.opensearch.index_checks import IndexOptions


class RayIngestOptions(BaseModel):
    """The Ray executor's settings; the per-input promises are those of ``IngestOptions``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(
        None, description="'auto', 'ray://host:10001' or a GCS address; None runs Ray on this machine"
    )
    embed_actors: int | None = Field(
        None,
        ge=1,
        description="embedding actors; default: actors_per_gpu per GPU, else one per 2 x embed_threads CPUs",
    )
    actors_per_gpu: int = Field(1, ge=1, description="embedding actors sharing one GPU")
    embed_threads: int = Field(1, ge=1, description="onnxruntime threads of a CPU embedding actor")
    providers: tuple[str, ...] | None = Field(None, description="onnxruntime providers (default: the best)")
    embed_memory_mb: int = Field(
        512, ge=0, description="memory an embedding actor reserves (its session and batches) in MiB"
    )
    batch_size: int = Field(8, ge=1, description="most same-size images per model run")
    embed_rows: int = Field(64, ge=1, description="rows handed to an embedding actor per call")
    read_rows: int = Field(64, ge=1, description="rows per read/decode task batch and existence check")
    write_batch: int = Field(256, ge=1, description="documents per store write")
    writer_actors: int = Field(
        2, ge=1, description="OpenSearch writer actors (a LocalStore, one SQLite file, always gets one)"
    )
    task_cpus: float = Field(1.0, gt=0, description="CPUs a read or decode task asks for")
    writer_cpus: float = Field(0.25, ge=0, description="CPUs a writer actor asks for (mostly waits on I/O)")
    skip_existing: bool = Field(True, description="skip ids already in the store (resume; re-ingest no-op)")
    image: ImageLoadConfig = ImageLoadConfig()
    decode: DecodeMode = Field(
        default_factory=default_decode,
        description="draft: JPEGs decoded at a reduced DCT scale; exact: every pixel (the index records it)",
    )
    ledger_path: Path | None = Field(None, description="JSONL file with each input's fate")
    pause_refresh: bool = Field(False, description="OpenSearch: refresh_interval -1 during the load")
    index: IndexOptions | None = Field(None, description="how a new OpenSearch index is built")
    bulk: BulkOptions | None = Field(None, description="OpenSearch bulk requests, retries, dead letters")
