"""Cost of a run from the manifest's price table (USD per million tokens)."""

from __future__ import annotations

from ..config.manifest import AgentsManifest, parse_model_ref
from ..messages import Usage


def cost_of(manifest: AgentsManifest, model_ref: str, usage: Usage) -> float | None:
    """The run's cost, or None when no price is configured for the model."""
    provider, name = parse_model_ref(model_ref)
    spec = manifest.providers.get(provider)
    price = spec.prices.get(name) if spec else None
    if price is None:
        return None
    return round(
        (usage.input_tokens * price.input_per_mtok + usage.output_tokens * price.output_per_mtok)
        / 1e6,
        10,
    )
