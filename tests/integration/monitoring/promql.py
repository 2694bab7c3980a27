"""Just enough of PromQL and of Prometheus's text format to ask which metrics an expression
reads, and whether a process exports them.

Not a PromQL parser: it takes the identifiers an expression names as series (an
identifier that is not a function call, a keyword, or inside a label matcher or a grouping
clause), and the label names each selector matches on. Good enough for the expressions in
k8s/monitoring/, which tests/integration/monitoring/test_dashboards.py checks against the
running stack.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Numbers (with exponents and duration units) first, so "1e6" or "5m" never yields a name.
_TOKEN = re.compile(r"\d[\w.]*|([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
     "group_right", "inf", "nan", "atan2"}
)  # fmt: skip

#: Series Prometheus makes itself at scrape or evaluation time, never exported by a target.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """(metric name, label names it matches on) of every `name{...}` selector."""
    text = _STRING.sub('""', expr)
    return [
        (name, frozenset(_MATCHER.findall(matchers))) for name, matchers in _SELECTOR.findall(text) if name
    ]


def metric_names(expr: str) -> set[str]:
    """Every series name expr reads."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub(" ", text)
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _TOKEN.finditer(text):
        name, call = match.group(1), match.group(2)
        if name and not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


@dataclass
class Exposition:
    """What scrapes returned: every sample name with its label names, and each family's type."""

    labels: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    types: dict[str, str] = field(default_factory=dict)

    def add(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                self.types[name] = kind
            elif line and not line.startswith("#"):
                name, _, rest = line.partition("{")
                if rest:
                    self.labels[name].update(re.findall(r'([A-Za-z_]\w*)="', rest.split("}")[0]))
                else:
                    self.labels.setdefault(line.split()[0], set())  # a sample without labels

    def has_samples(self, name: str) -> bool:
        return name in self.labels

    def declares(self, name: str) -> bool:
        """True when some family declares name: as itself, or as one of its type's series."""
        if name in self.types or name in self.labels:
            return True
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
        }
        for suffix in ("_total", "_created", "_bucket", "_sum", "_count"):
            family = name.removesuffix(suffix)
            if family != name and suffix in suffixes.get(self.types.get(family, ""), ()):
                return True
        return False


@dataclass
class Rule:
    """One rule of a rule file: `alert` or `record`, its name, and its other keys (labels
    and annotations as mappings)."""

    kind: str
    name: str
    group: str
    fields: dict[str, str | dict[str, str]] = field(default_factory=dict)

    @property
    def expr(self) -> str:
        value = self.fields.get("expr", "")
        return value if isinstance(value, str) else ""


_RULE_START = re.compile(r"^(\s*)- (alert|record): (.+)$")
_GROUP = re.compile(r"^- name: (.+)$")
_KEY = re.compile(r"^(\s*)([A-Za-z_]\w*):(?:\s+(.*))?$")


def read_rules(text: str) -> list[Rule]:
    """The rules of a Prometheus rule file written as k8s/monitoring/alerts.yaml is: block
    style, two-space indents, `|`/`>-` block scalars. (The venv has no YAML library, and
    promtool is not part of the stack.)"""
    rules: list[Rule] = []
    lines = text.splitlines()
    group, i = "", 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if found := _GROUP.match(line):
            group = found.group(1).strip()
            continue
        start = _RULE_START.match(line)
        if not start:
            continue
        indent = len(start.group(1)) + 2
        rule = Rule(start.group(2), _scalar(start.group(3)), group)
        mapping: dict[str, str] | None = None
        while i < len(lines):
            line = lines[i]
            depth = len(line) - len(line.lstrip())
            if (line.strip() and depth < indent) or _RULE_START.match(line):
                break
            i += 1
            key = _KEY.match(line)
            if not line.strip() or line.lstrip().startswith("#") or key is None:
                continue
            value = key.group(3) or ""
            if value in ("|", "|-", ">", ">-"):
                block: list[str] = []
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > depth
                ):
                    block.append(lines[i].strip())
                    i += 1
                value = ("\n" if value.startswith("|") else " ").join(block).strip()
            if depth == indent:
                if value:
                    rule.fields[key.group(2)] = _scalar(value)
                    mapping = None
                else:
                    mapping = {}
                    rule.fields[key.group(2)] = mapping
            elif mapping is not None:
                mapping[key.group(2)] = _scalar(value)
        rules.append(rule)
    return rules


def _scalar(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
