"""Pure, validated types shared by controller and agent: no I/O, no kernel, no web."""

from edgectl.model.errors import ModelError
from edgectl.model.lint import check, lint
from edgectl.model.policy import (
    BlockAction,
    DesiredState,
    Exemption,
    GatewaySettings,
    Hook,
    Pool,
    PoolKind,
    Quarantine,
    QuarantineMode,
    RateLimitProfile,
    Relay,
)
from edgectl.model.prefix import Prefix
from edgectl.model.serial import state_from_data, state_to_data

__all__ = [
    "BlockAction",
    "DesiredState",
    "Exemption",
    "GatewaySettings",
    "Hook",
    "ModelError",
    "Pool",
    "PoolKind",
    "Prefix",
    "Quarantine",
    "QuarantineMode",
    "RateLimitProfile",
    "Relay",
    "check",
    "lint",
    "state_from_data",
    "state_to_data",
]
