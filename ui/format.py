"""Small formatting helpers shared by the tabs."""

from __future__ import annotations

from spatial.world import CheckResult
from spatial.world.grammar import indefinite_article

_MARK = {"true": "holds:", "false": "**violated:**", "unknown": "unknown (object missing):"}


def verdict_markdown(result: CheckResult) -> str:
    head = "**Oracle: satisfied**" if result.satisfied else "**Oracle: not satisfied**"
    lines = [head]
    for o in result.objects:
        lines.append(f"- {o['name']}: {'found' if o['found'] else '**not found**'}")
    for r in result.relations:
        lines.append(f"- {_MARK[r['verdict']]} {r['subject']} *{r['relation']}* {r['object']}")
    if result.extras:  # not a failure (scenes may hold distractors), but worth seeing: RL can learn to add clutter
        named = {o["name"] for o in result.objects}
        extras = [f"another {e['name']}" if e["name"] in named else f"{indefinite_article(e['name'])} {e['name']}"
                  for e in result.extras]  # fmt: skip
        lines.append(f"- not asked for: {', '.join(extras)}")
    return "\n".join(lines)
