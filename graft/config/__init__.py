"""Loading and validating graft.yaml (DESIGN §2). See docs/configuration.md."""

from graft.config.loader import default_config_text, load_config
from graft.config.model import (
    FSM_VERBS,
    Config,
    ConfigError,
    FsmConfig,
    FsmMode,
    PeerConfig,
    TlsConfig,
)

__all__ = [
    "FSM_VERBS",
    "Config",
    "ConfigError",
    "FsmConfig",
    "FsmMode",
    "PeerConfig",
    "TlsConfig",
    "default_config_text",
    "load_config",
]
