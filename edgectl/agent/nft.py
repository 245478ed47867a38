"""libnftables, kept open in the process: the only code that commits to the kernel.

Spawning ``nft`` costs ~5 ms a call; a handle kept open adds one element to a
hash set in 0.06-0.2 ms (ARCHITECTURE.md), which is what makes a quarantine
delta cheap.  libnftables commits a script as one netlink batch, so a
transaction is applied whole or not at all.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from enum import StrEnum
from typing import Any

from edgectl.agent.netns import inside

# nftables/libnftables.h
_OUTPUT_JSON = 1 << 4


def release_heap() -> None:
    """Hand freed heap back to the system (glibc ``malloc_trim``); a no-op elsewhere.

    After a full sync the parse of a million-key script has been freed, but
    glibc keeps the pages mapped: hundreds of MiB of RSS for an idle agent.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


class NftErrorKind(StrEnum):
    """Why the kernel or nft refused, for callers that act on the reason."""

    NOT_FOUND = "not-found"  # ENOENT: no such table, chain, set or element
    EXISTS = "exists"  # EEXIST: created twice
    SYNTAX = "syntax"  # nft's parser refused the script; the kernel never saw it
    BUSY = "busy"  # EBUSY: e.g. deleting a set a rule still uses
    OTHER = "other"


# libnftables reports a kernel refusal as "Error: Could not process rule:
# <strerror>" and a parse failure as "Error: syntax error, ..."; its text is
# all we get (nft_run_cmd_from_buffer returns only -1).  Checked in this
# order: a script can hold several errors, and a syntax error means nothing
# reached the kernel.
_KIND_BY_TEXT = (
    ("syntax error", NftErrorKind.SYNTAX),
    (os.strerror(errno.ENOENT), NftErrorKind.NOT_FOUND),
    (os.strerror(errno.EEXIST), NftErrorKind.EXISTS),
    (os.strerror(errno.EBUSY), NftErrorKind.BUSY),
)
_KIND_BY_ERRNO = {
    errno.ENOENT: NftErrorKind.NOT_FOUND,
    errno.EEXIST: NftErrorKind.EXISTS,
    errno.EBUSY: NftErrorKind.BUSY,
}


def classify(text: str) -> NftErrorKind:
    """The kind of a libnftables error text."""
    return next((kind for needle, kind in _KIND_BY_TEXT if needle in text), NftErrorKind.OTHER)


def kind_of_errno(code: int | None) -> NftErrorKind:
    """The kind of a kernel errno (element batches sent over raw netlink)."""
    return _KIND_BY_ERRNO.get(code or 0, NftErrorKind.OTHER)


class NftError(RuntimeError):
    """nft or the kernel refused a transaction; ``message`` is the refusal's text.

    ``kind`` is decided here, from libnftables' own text, unless the caller
    knows it already (a wrapped NftError's kind, a netlink errno).
    """

    def __init__(self, message: str, kind: NftErrorKind | None = None) -> None:
        super().__init__(message.strip() or "nft failed without a message")
        self.message = message
        self.kind = classify(message) if kind is None else kind


def _found_library() -> ctypes.CDLL:
    """libnftables under another soname, wherever ctypes.util finds it."""
    import ctypes.util

    path = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        return ctypes.CDLL(path)
    except OSError as error:
        raise NftError(
            f"cannot load libnftables ({error}); install the nftables package"
        ) from error


def _library() -> ctypes.CDLL:
    try:
        # By its soname first, as the dynamic linker finds it: ctypes.util's
        # search costs every command ~15 ms of imports and an ldconfig run.
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        lib = _found_library()
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
    lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


class Nft:
    """One libnftables context bound to one network namespace (None: this one)."""

    def __init__(self, netns: str | None = None) -> None:
        self._lib = _library()
        # libnftables opens its netlink socket in nft_ctx_new and keeps it
        # (nftables 1.0.6), so the context stays bound to the namespace it
        # was created in.  Entering per command instead costs 2.7 ms of
        # setns a call against 0.16 ms for the element add itself.
        with inside(netns):
            self._ctx = self._lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftError("nft_ctx_new failed")
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, script: str, *, dry_run: bool = False, json_output: bool = False) -> str:
        """Run ``script`` as one transaction; return nft's output or raise NftError."""
        if not self._ctx:
            raise NftError("nft context is closed")
        flags = self._lib.nft_ctx_output_get_flags(self._ctx)
        wanted = flags | _OUTPUT_JSON if json_output else flags & ~_OUTPUT_JSON
        self._lib.nft_ctx_output_set_flags(self._ctx, wanted)
        self._lib.nft_ctx_set_dry_run(self._ctx, dry_run)
        try:
            status = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
        finally:
            self._lib.nft_ctx_set_dry_run(self._ctx, False)
        output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        errors = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if status != 0:
            raise NftError(errors)
        return output

    def run_json(self, script: str) -> list[dict[str, Any]]:
        output = self.run(script, json_output=True)
        if not output.strip():
            return []
        items: list[dict[str, Any]] = json.loads(output)["nftables"]
        return items
