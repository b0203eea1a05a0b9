"""Which pull requests get a preview: the repository's opt-in policy (pure, no I/O).

- `all`: every open pull request;
- `label`: pull requests carrying the opt-in label (`preview` by default), or one a trusted
  commenter asked for with `/preview`;
- drafts never get one unless the repository allows it (`ready_for_review` then creates it).

A `/preview delete` opts the PR out until `/preview` or the label changes again.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL, LABEL = "all", "label"
OPT_IN, OPT_OUT = "in", "out"  # what a /preview or /preview delete asked for


@dataclass(frozen=True)
class Policy:
    mode: str = ALL
    label: str = "preview"
    drafts: bool = False


@dataclass(frozen=True)
class PullInfo:
    open: bool = True
    draft: bool = False
    labels: frozenset[str] = frozenset()
    command_opt: str = ""  # OPT_IN (/preview), OPT_OUT (/preview delete) or ""


@dataclass(frozen=True)
class Verdict:
    wanted: bool
    reason: str


def decide(policy: Policy, pull: PullInfo) -> Verdict:
    if not pull.open:
        return Verdict(False, "the PR is closed")
    if pull.draft and not policy.drafts:
        return Verdict(False, "the PR is a draft; previews start when it is ready for review")
    if pull.command_opt == OPT_OUT:
        return Verdict(False, "the preview was deleted with /preview delete; comment /preview to bring it back")
    if policy.mode == ALL:
        return Verdict(True, "every PR gets a preview")
    if policy.label.lower() in {label.lower() for label in pull.labels}:
        return Verdict(True, f"the PR has the label {policy.label!r}")
    if pull.command_opt == OPT_IN:
        return Verdict(True, "a /preview command asked for it")
    return Verdict(False, f"the PR does not have the label {policy.label!r} (or comment /preview)")


def policy_of(repository) -> Policy:
    return Policy(mode=repository.opt_in, label=repository.opt_in_label, drafts=repository.preview_drafts)
