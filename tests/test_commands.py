"""The pure parts of PR commands and opt-in: parsing hostile comments, trust, rate limits, opt-in decisions."""

import pytest

from previews import commands, optin
from previews.commands import Command, Malformed

C = Command


@pytest.mark.parametrize("body,expected", [
    ("/preview", C("create")),
    ("  /preview  ", C("create")),
    ("/Preview", C("create")),
    ("\n\n/preview redeploy\n", C("redeploy")),
    ("/preview REDEPLOY", C("redeploy")),
    ("/preview pin", C("pin")),
    ("/preview unpin", C("unpin")),
    ("/preview sleep", C("sleep")),
    ("/preview wake", C("wake")),
    ("/preview delete", C("delete")),
    ("/preview help", C("help")),
    ("/preview\textend\t48h", C("extend", 48)),
    ("/preview extend 48h QA tomorrow", C("extend", 48, "QA tomorrow")),
    ("/preview extend 48", C("extend", 48)),
    ("/preview extend 2d", C("extend", 48)),
    ("/preview extend 1h", C("extend", 1)),
    ("/preview extend 2160h", C("extend", 2160)),
    ("/preview extend 90d", C("extend", 2160)),
    ("/preview extend 3h démo für QA ✅", C("extend", 3, "démo für QA ✅")),
    # only the first non-blank line counts; later lines are ignored
    ("/preview pin\n/preview delete", C("pin")),
    ("/preview extend 5h reason\nrm -rf / `whoami` $(id)", C("extend", 5, "reason")),
    # control and format characters (bidi overrides, zero-width) never reach the reason
    ("/preview extend 5h a\u202eb\u200bc\x07d", C("extend", 5, "abcd")),
    ("/preview extend 5h " + "x" * 250, C("extend", 5, "x" * 200)),
])
def test_commands_are_parsed(body, expected):
    assert commands.parse(body) == expected


@pytest.mark.parametrize("body", [
    "", "hello", "please /preview", "> /preview", "`/preview`", "/previews", "/preview-extend",
    "\uff0fpreview", "/prev\u0131ew", "/preview\u00a0extend 2h", "/preview\u200b",
    None, 42, ["/preview"], {"body": "/preview"},
    "Looks good!\n/preview",  # a command is only the first non-blank line
])
def test_other_comments_are_not_commands(body):
    assert commands.parse(body) is None


@pytest.mark.parametrize("body,problem", [
    ("/preview frobnicate", "unknown command"),
    ("/preview déployer", "unknown command"),
    ("/preview pin now", "takes no arguments"),
    ("/preview delete everything", "takes no arguments"),
    ("/preview help me", "takes no arguments"),
    ("/preview extend", "say how long"),
    ("/preview extend forever", "needs a duration"),
    ("/preview extend -5h", "needs a duration"),
    ("/preview extend +5h", "needs a duration"),
    ("/preview extend 1.5h", "needs a duration"),
    ("/preview extend 0h", "1 to 2160 hours"),
    ("/preview extend 2161h", "1 to 2160 hours"),
    ("/preview extend 91d", "1 to 2160 hours"),
    ("/preview extend 99999d", "1 to 2160 hours"),
    ("/preview extend 999999h", "needs a duration"),
    ("/preview extend \uff14\uff18h", "needs a duration"),  # full-width digits are not numbers here
    ("/preview extend 48w", "needs a duration"),
    ("/preview extend 1e3h", "needs a duration"),
    ("/preview " + "a" * 400, "longer than 300"),
    ("/preview extend 5h " + "x" * 5000, "longer than 300"),
])
def test_malformed_commands_say_what_is_wrong(body, problem):
    result = commands.parse(body)
    assert isinstance(result, Malformed) and problem in result.problem


def test_a_huge_comment_is_read_only_at_its_start():
    assert commands.parse("/preview pin\n" + "z" * 10_000_000) == C("pin")
    assert isinstance(commands.parse("/preview " + "z" * 10_000_000), Malformed)


@pytest.mark.parametrize("command,text", [
    (C("create"), "/preview"), (C("extend", 48, "anything `here`"), "/preview extend 48h"), (C("pin"), "/preview pin"),
])
def test_a_command_is_shown_in_its_canonical_form_without_the_reason(command, text):
    assert command.display() == text


@pytest.mark.parametrize("association,trusted", [
    ("OWNER", True), ("MEMBER", True), ("COLLABORATOR", True), ("member", True),
    ("CONTRIBUTOR", False), ("FIRST_TIME_CONTRIBUTOR", False), ("NONE", False), ("", False), (None, False),
    (["OWNER"], False),
])
def test_only_trusted_associations(association, trusted):
    assert commands.is_trusted(association, frozenset({"OWNER", "MEMBER", "COLLABORATOR"})) is trusted


@pytest.mark.parametrize("login,ok", [
    ("mona", True), ("a-b", True), ("a" * 39, True), ("a" * 40, False), ("-mona", False), ("mo--na", False),
    ("mona]", False), ("@mona", False), ("mona\n", False), ("", False), (None, False), ("mönä", False),
])
def test_logins_are_checked_before_they_are_mentioned(login, ok):
    assert commands.valid_login(login) is ok


@pytest.mark.parametrize("recent,limit,limited", [(0, 5, False), (4, 5, False), (5, 5, True), (50, 5, True)])
def test_rate_limit(recent, limit, limited):
    assert commands.rate_limited(recent, limit) is limited


P = optin.Policy
PR = optin.PullInfo


@pytest.mark.parametrize("policy,pull,wanted,why", [
    (P(), PR(), True, "every PR"),
    (P(), PR(open=False), False, "closed"),
    (P(), PR(draft=True), False, "draft"),
    (P(drafts=True), PR(draft=True), True, "every PR"),
    (P(mode="label"), PR(), False, "does not have the label 'preview'"),
    (P(mode="label"), PR(labels=frozenset({"preview"})), True, "has the label"),
    (P(mode="label"), PR(labels=frozenset({"Preview"})), True, "has the label"),
    (P(mode="label", label="deploy-me"), PR(labels=frozenset({"preview"})), False, "'deploy-me'"),
    (P(mode="label"), PR(labels=frozenset({"preview"}), draft=True), False, "draft"),
    (P(mode="label", drafts=True), PR(labels=frozenset({"preview"}), draft=True), True, "has the label"),
    (P(mode="label"), PR(command_opt="in"), True, "/preview command"),
    (P(mode="label"), PR(command_opt="in", draft=True), False, "draft"),
    (P(), PR(command_opt="out"), False, "/preview delete"),
    (P(mode="label"), PR(labels=frozenset({"preview"}), command_opt="out"), False, "/preview delete"),
])
def test_opt_in(policy, pull, wanted, why):
    verdict = optin.decide(policy, pull)
    assert verdict.wanted is wanted and why in verdict.reason
