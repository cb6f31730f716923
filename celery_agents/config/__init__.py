"""Configuration: ``Settings`` (environment) and ``AgentsManifest`` (YAML). No I/O beyond files."""

from .manifest import AgentsManifest, AgentSpec, ModelSettings, ProviderSpec, parse_model_ref
from .settings import Settings

__all__ = [
    "AgentSpec",
    "AgentsManifest",
    "ModelSettings",
    "ProviderSpec",
    "Settings",
    "parse_model_ref",
]
