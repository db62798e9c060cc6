"""One row of the results table, and the Markdown that shows them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Row:
    figure: str
    value: str
    reference: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| figure | value | reference | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["figure"], row["value"], row["reference"], row["ratio"], row["target"]]
        lines.append("| " + " | ".join(cells) + f" | {verdict(row['met'])} |")
    return "\n".join(lines)


def rate(value: float) -> str:
    return f"{value:,.0f}/s"
