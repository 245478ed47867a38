#!/usr/bin/python
"""Ansible module: make one object of the edgectl controller's REST API match its data."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: edgectl_api
short_description: Ensure a pool, relay, rate-limit profile or gateway on an edgectl controller
description:
  - Reads the object with C(GET), then creates it (C(POST)), updates it (C(PUT), or C(PATCH)
    for gateways) or deletes it, only when it differs from O(data). Reports C(changed) only then.
  - Creating a gateway returns its agent token once (RV(agent_token)); O(rotate_token) asks for a
    new one. Call it with C(no_log) whenever a token can come back.
  - Uses only the Python standard library, so it runs on any managed host.
options:
  url:
    description: The controller's base URL, e.g. C(https://controller.isp.example:8470).
    type: str
    required: true
  token:
    description: A netops API token.
    type: str
    required: true
  ca_path:
    description: PEM file of the CA that signed the controller's certificate (on the host running the module).
    type: path
  kind:
    description: Which collection of the API.
    type: str
    required: true
    choices: [pool, relay, rate_limit, gateway]
  name:
    description: The object's name.
    type: str
    required: true
  data:
    description:
      - The object's fields without C(name) (the API's Create model).
      - For a gateway only the settings given here are compared; the controller fills the rest.
    type: dict
    default: {}
  state:
    description: Whether the object exists.
    type: str
    default: present
    choices: [present, absent]
  rotate_token:
    description: For a gateway that already exists, issue a new agent token (the old one stops working).
    type: bool
    default: false
  create:
    description: Create the object when it is missing; false fails instead.
    type: bool
    default: true
  timeout:
    description: Seconds for each HTTP request.
    type: float
    default: 30
author:
  - edgectl
"""

RETURN = r"""
object:
  description: The object as the controller returns it after the call (absent when deleted).
  type: dict
  returned: success
agent_token:
  description: The gateway's new agent token, when this call created the gateway or rotated its token.
  type: str
  returned: when a token was issued
"""

import ipaddress
import json
import ssl
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

PATHS = {
    "pool": "/v1/pools",
    "relay": "/v1/relays",
    "rate_limit": "/v1/rate-limits",
    "gateway": "/v1/gateways",
}
# The fields the controller stores for each kind, with its defaults, so that
# an omitted optional field compares equal to what the controller returns.
DEFAULTS = {
    "pool": {"subscriber_prefix_len": None, "rate_limit": None, "op25b_shadow": False},
    "relay": {},
    "rate_limit": {"concurrent": None, "per_destination": None, "shadow": False},
}
UNORDERED = ("prefixes", "pools", "resolvers", "portal")
# Lists of prefixes, compared in the controller's canonical form (a single
# address bare, as operators write it: 198.51.100.25, not 198.51.100.25/32).
PREFIX_LISTS = ("prefixes", "resolvers", "portal")


def _canonical(text):
    try:
        network = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return text
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


class Api:
    def __init__(self, url, token, ca_path, timeout):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_path) if ca_path else None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self.context
            ) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from None
        return json.loads(text) if text else None


def _normal(kind, data):
    out = dict(DEFAULTS.get(kind, {}))
    out.update(data)
    for key in PREFIX_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_canonical(item) for item in out[key]]
    for key in UNORDERED:
        if isinstance(out.get(key), list):
            out[key] = sorted(out[key])
    return out


def differs(kind, current, desired):
    """Whether ``current`` (from GET) differs from ``desired`` in any field ``desired`` sets."""
    want = _normal(kind, desired)
    have = _normal(kind, {k: current.get(k) for k in want})
    if kind == "gateway":
        settings = _normal("settings", want.pop("settings", None) or {})
        have_settings = _normal("settings", have.pop("settings", None) or {})
        if any(have_settings.get(k) != v for k, v in settings.items()):
            return True
    return want != have


def main():
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "token": {"type": "str", "required": True, "no_log": True},
            "ca_path": {"type": "path"},
            "kind": {"type": "str", "required": True, "choices": sorted(PATHS)},
            "name": {"type": "str", "required": True},
            "data": {"type": "dict", "default": {}},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "rotate_token": {"type": "bool", "default": False, "no_log": False},
            "create": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 30.0},
        },
        supports_check_mode=True,
    )
    p = module.params
    api = Api(p["url"], p["token"], p["ca_path"], p["timeout"])
    kind, name, data = p["kind"], p["name"], dict(p["data"])
    base = PATHS[kind]
    path = f"{base}/{name}"
    result = {"changed": False}
    try:
        try:
            current = api.call("GET", path)
        except ApiError as error:
            if error.status != 404:
                raise
            current = None
        if p["state"] == "absent":
            if current is not None:
                result["changed"] = True
                if not module.check_mode:
                    api.call("DELETE", path)
            module.exit_json(**result)
        if current is None:
            if not p["create"]:
                module.fail_json(msg=f"{kind} {name} does not exist at the controller", **result)
            result["changed"] = True
            if module.check_mode:
                module.exit_json(**result)
            created = api.call("POST", base, {"name": name, **data})
            token = created.pop("agent_token", None)
            if token is not None:
                result["agent_token"] = token
            result["object"] = created
            module.exit_json(**result)
        if differs(kind, current, data):
            result["changed"] = True
            if not module.check_mode:
                method = "PATCH" if kind == "gateway" else "PUT"
                current = api.call(method, path, data)
        if kind == "gateway" and p["rotate_token"]:
            result["changed"] = True
            if not module.check_mode:
                result["agent_token"] = api.call("POST", f"{path}/token")["agent_token"]
        result["object"] = current
    except ApiError as error:
        module.fail_json(msg=f"{kind} {name}: {error}", status=error.status, **result)
    except (OSError, ValueError) as error:
        module.fail_json(msg=f"{kind} {name}: cannot reach {p['url']}: {error}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
