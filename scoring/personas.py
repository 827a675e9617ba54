"""Who a lead is, from the free text a CRM holds: seniority and department from a job title,
free-mail versus corporate e-mail domains, and one normalised key per company.

Pure functions with no I/O; connectors call :func:`company_key` when they store a lead, and the
feature builder calls the title functions vectorised over a column.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Ordered: the first pattern that matches wins, so "VP of Engineering" is VP, not Engineering
# staff, and "Assistant to the CEO" is caught before "CEO".
_SENIORITY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Student", re.compile(r"\b(student|intern|trainee|apprentice)\b")),
    ("Individual Contributor", re.compile(r"\b(assistant|associate|coordinator|specialist|analyst)\b")),
    (
        "C-Level",
        re.compile(
            r"\b(c[eotfimr]o|chief|founder|co-?founder|owner|president|managing director|partner)\b"
        ),
    ),
    ("VP", re.compile(r"\b(vp|svp|evp|avp|vice[ -]president|v\.p\.)\b")),
    ("Director", re.compile(r"\b(director|head of|head|dir\.?)\b")),
    ("Manager", re.compile(r"\b(manager|mgr|lead|supervisor|principal)\b")),
    (
        "Individual Contributor",
        re.compile(
            r"\b(engineer|developer|consultant|representative|rep|administrator|admin|designer|"
            r"scientist|architect|accountant|officer|executive|planner|buyer|technician|writer|"
            r"agent|advisor|clerk|staff|member)\b"
        ),
    ),
)

SENIORITY_ORDER: tuple[str, ...] = ("C-Level", "VP", "Director", "Manager", "Individual Contributor", "Student")

_DEPARTMENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("IT", re.compile(r"\b(it|cio|information technology|infrastructure|sysadmin|systems|security|"
                      r"network|helpdesk|devops|cto)\b")),
    ("Engineering", re.compile(r"\b(engineer\w*|developer|software|r&d|technical|technology|architect|"
                               r"platform|data|qa)\b")),
    ("Marketing", re.compile(r"\b(marketing|cmo|brand|growth|demand gen\w*|content|communications|"
                             r"seo|pr)\b")),
    ("Sales", re.compile(r"\b(sales|cro|account executive|account manager|business development|bdr|"
                         r"sdr|revenue|commercial)\b")),
    ("Finance", re.compile(r"\b(finance|financial|cfo|controller|accountant|accounting|treasur\w*|"
                           r"procurement|purchasing|buyer)\b")),
    ("Operations", re.compile(r"\b(operations|ops|coo|logistics|supply chain|facilities)\b")),
    ("HR", re.compile(r"\b(hr|human resources|people|talent|recruit\w*|chro)\b")),
    ("Product", re.compile(r"\b(product|ux|design\w*)\b")),
    ("Executive", re.compile(r"\b(ceo|founder|co-?founder|owner|president|managing director|"
                             r"general manager|partner)\b")),
)

# The consumer mailbox providers leads most often sign up with. A lead on one of them carries no
# company signal in the address (and is a weaker B2B lead on average).
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "ymail.com",
        "hotmail.com", "hotmail.co.uk", "hotmail.fr", "hotmail.de", "outlook.com", "live.com",
        "msn.com", "aol.com", "icloud.com", "me.com", "mac.com", "gmx.com", "gmx.de", "gmx.net",
        "web.de", "mail.com", "protonmail.com", "proton.me", "zoho.com", "yandex.com", "yandex.ru",
        "mail.ru", "qq.com", "163.com", "126.com", "rediffmail.com", "libero.it", "orange.fr",
        "free.fr", "wanadoo.fr", "t-online.de", "comcast.net", "verizon.net", "att.net",
        "btinternet.com", "sky.com", "fastmail.com", "hey.com", "tutanota.com", "inbox.com",
    }
)

_LEGAL_SUFFIXES = re.compile(
    r"\b(incorporated|inc|llc|l\.l\.c|ltd|limited|gmbh|corp|corporation|co|company|plc|sa|s\.a|ag|bv|"
    r"b\.v|nv|oy|ab|as|srl|sarl|spa|pty|pvt|kg|group|holdings?)\b\.?"
)
# Letters and digits of every alphabet are kept (after NFKC + casefold); the rest separates words.
_NON_WORD = re.compile(r"[\W_]+")
_PLACEHOLDER_TEXT = frozenset(
    {"", "n/a", "na", "none", "null", "nil", "-", "--", "?", "select", "unknown", "not provided", "-1",
     "[not provided]", "test"}
)


def _clean_title(title: str) -> str:
    text = title.strip().lower()
    text = text.replace("&", " & ").replace("/", " / ").replace(",", " ")
    return re.sub(r"\s+", " ", text)


@lru_cache(maxsize=65_536)
def seniority(title: str | None) -> str | None:
    """The seniority level a job title states (one of :data:`SENIORITY_ORDER`), or None if unknown."""
    if title is None or title.strip().lower() in _PLACEHOLDER_TEXT:
        return None
    text = _clean_title(title)
    for level, pattern in _SENIORITY_RULES:
        if pattern.search(text):
            return level
    return None


@lru_cache(maxsize=65_536)
def department(title: str | None) -> str | None:
    """The department a job title points to ("Engineering", "Marketing", ...), or None if unknown."""
    if title is None or title.strip().lower() in _PLACEHOLDER_TEXT:
        return None
    text = _clean_title(title)
    for name, pattern in _DEPARTMENT_RULES:
        if pattern.search(text):
            return name
    return None


def email_domain(email: str | None) -> str | None:
    """The lower-cased domain of an e-mail address, or None when there is no usable address."""
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().lower().rstrip(".")
    return domain if "." in domain else None


def is_free_mail(email: str | None) -> bool | None:
    """True for a consumer mailbox (gmail, outlook, ...), False for a corporate one, None if no address."""
    domain = email_domain(email)
    if domain is None:
        return None
    return domain in FREE_MAIL_DOMAINS


def company_key(company: str | None, email: str | None = None) -> str | None:
    """One key per company so leads of the same buying committee group together.

    The company name is lower-cased, stripped of punctuation and legal suffixes ("Acme, Inc." and
    "ACME Inc" give "acme"); a missing or placeholder name falls back to the corporate e-mail
    domain ("acme.com"). Free-mail domains never become a key: they would lump strangers together.
    """
    if company is not None and company.strip().lower() not in _PLACEHOLDER_TEXT:
        text = _LEGAL_SUFFIXES.sub(" ", unicodedata.normalize("NFKC", company.strip()).casefold())
        key = _NON_WORD.sub(" ", text).strip()
        if key:
            return key.replace(" ", "-")[:255]
    domain = email_domain(email)
    if domain is not None and domain not in FREE_MAIL_DOMAINS:
        return domain[:255]
    return None
