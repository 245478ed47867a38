"""Pure, validated types shared by controller and agent: no I/O, no kernel, no web."""

from edgectl.model.errors import ModelError
from edgectl.model.lint import check, lint
from edgectl.model.policy import (
    MODE_POLICY,
    BlockAction,
    DesiredState,
    Exemption,
    GardenDestination,
    GatewaySettings,
    Hook,
    ModePolicy,
    Pool,
    PoolKind,
    Quarantine,
    QuarantineMode,
    RateLimitProfile,
    Relay,
    enforced_mode,
)
from edgectl.model.prefix import Prefix
from edgectl.model.serial import state_from_data, state_to_data

__all__ = [
    "MODE_POLICY",
    "BlockAction",
    "DesiredState",
    "Exemption",
    "GardenDestination",
    "GatewaySettings",
    "Hook",
    "ModePolicy",
    "ModelError",
    "Pool",
    "PoolKind",
    "Prefix",
    "Quarantine",
    "QuarantineMode",
    "RateLimitProfile",
    "Relay",
    "check",
    "enforced_mode",
    "lint",
    "state_from_data",
    "state_to_data",
]
