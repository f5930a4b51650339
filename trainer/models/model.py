"""A loaded retrieval model: the network, the config that rebuilds it and its post-hoc whitening."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .network import NetworkConfig, RetrievalNet
from .whitening import Whitening


@dataclass
class RetrievalModel:
    """``whitening``: learned (Lw) or PCA whitening applied to the descriptors after extraction,
    keyed ``"ss"`` (learned on single-scale descriptors) and/or ``"ms"`` (multi-scale), as cirtorch
    keeps them; empty when there is none. ``origin`` says where the model came from."""

    net: RetrievalNet
    config: NetworkConfig
    whitening: dict[str, Whitening] = field(default_factory=dict)
    origin: str = ""

    def whitening_for(self, scales: Sequence[float]) -> Whitening | None:
        """The whitening learned for this kind of extraction (multi-scale or not), if any."""
        return self.whitening.get("ms" if len(scales) > 1 else "ss")

    def output_dim_for(self, scales: Sequence[float]) -> int:
        """Dimension of the final descriptors of this kind of extraction."""
        whitening = self.whitening_for(scales)
        return whitening.output_dim if whitening is not None else self.net.output_dim
