"""NftError: the kind of a refusal is decided once, from libnftables' text or the kernel's errno."""

from __future__ import annotations

import errno

import pytest

from edgectl.agent.nft import NftError, NftErrorKind, kind_of_errno


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (
            "/dev/stdin:1:19-33: Error: Could not process rule: No such file or directory\n"
            "delete table inet nosuchtable\n",
            NftErrorKind.NOT_FOUND,
        ),
        ("Error: Could not process rule: File exists", NftErrorKind.EXISTS),
        ("Error: Could not process rule: Device or resource busy", NftErrorKind.BUSY),
        (
            "/dev/stdin:2:30-30: Error: syntax error, unexpected '}'\n"
            "add chain inet t c { garbage }\n",
            NftErrorKind.SYNTAX,
        ),
        ("Error: Could not process rule: Numerical result out of range", NftErrorKind.OTHER),
        ("", NftErrorKind.OTHER),
    ],
)
def test_the_kind_comes_from_libnftables_text(text: str, kind: NftErrorKind) -> None:
    assert NftError(text).kind is kind


def test_a_syntax_error_wins_over_a_kernel_word_in_the_same_text() -> None:
    text = "Error: syntax error, unexpected string\nset No such file or directory\n"
    assert NftError(text).kind is NftErrorKind.SYNTAX


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOENT, NftErrorKind.NOT_FOUND),
        (errno.EEXIST, NftErrorKind.EXISTS),
        (errno.EBUSY, NftErrorKind.BUSY),
        (errno.EINVAL, NftErrorKind.OTHER),
        (None, NftErrorKind.OTHER),
    ],
)
def test_the_kind_of_a_netlink_refusal_comes_from_its_errno(
    code: int | None, kind: NftErrorKind
) -> None:
    assert kind_of_errno(code) is kind


def test_a_wrapped_error_keeps_the_kind_it_was_given() -> None:
    inner = NftError("Error: Could not process rule: No such file or directory")
    outer = NftError(f"full sync refused, kernel unchanged: {inner.message}", inner.kind)
    assert outer.kind is NftErrorKind.NOT_FOUND
    assert outer.message.startswith("full sync refused")
