"""Pull requests from forks: whether one may be deployed, the same rule for every path that deploys (the
webhook, `/preview` comments, GitHub Actions OIDC tokens). Pure.

A PR's branch is in a fork when its head repository is another repository, or one GitHub no longer names
(a deleted fork): either way not a branch this repository's people pushed. A fork PR is deployed only when the
repository allows fork previews, and only for someone GitHub calls an owner, member or collaborator
(CONTRIBUTOR, FIRST_TIME_CONTRIBUTOR, FIRST_TIMER and NONE never are).
"""

from __future__ import annotations

from previews.models import Repository

TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})


def is_fork(repository_full_name: str, head_repository: str) -> bool:
    return not head_repository or head_repository.lower() != repository_full_name.lower()


def refusal(repository: Repository, head_repository: str, association: str, who: str = "an author") -> str:
    """Why a PR whose branch is in `head_repository` may not be deployed for `association` ("" = it may)."""
    if not is_fork(repository.full_name, head_repository):
        return ""
    if not repository.allow_fork_previews:
        return "pull request from a fork (the repository does not allow fork previews)"
    if association not in TRUSTED_ASSOCIATIONS:
        return (f"pull request from a fork, for {who} GitHub calls {(association or 'NONE')[:30]} "
                "(only owners, members and collaborators)")
    return ""
