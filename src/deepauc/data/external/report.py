"""The external merge report as markdown."""

from __future__ import annotations

from deepauc.markdown import markdown_table


def format_report(report: dict, examples: int = 10) -> str:
    """The merge report as markdown: counts per source and examples of dropped images."""
    counts = report["counts"]
    total = counts[counts["source"] == "total"].iloc[0]
    lines = [
        "# External data merge",
        "",
        markdown_table(counts),
        "",
        f"Result: {int(total['images_out'])} images, {int(total['malignant_out'])} malignant "
        f"({total['malignant_ratio']:.2%}).",
    ]
    if report.get("layouts"):
        lines.append(
            "Layouts: " + ", ".join(f"{src} = {name}" for src, name in report["layouts"].items())
        )
    if "dropped_marked_duplicate" in counts.columns:
        lines.append(
            f"{int(total['dropped_marked_duplicate'])} row(s) marked as duplicates by a resized "
            "set (tfrecord -1) were dropped."
        )
    if not report["content_dedup"]:
        lines.append("Content deduplication was skipped (--no-content-dedup).")
    if report["competition_content_duplicates"]:
        lines.append(
            f"{report['competition_content_duplicates']} competition image(s) are byte-identical "
            "to another competition image; kept (competition rows are never dropped)."
        )
    dropped = report["dropped"]
    if len(dropped):
        lines += [
            "",
            f"## Dropped duplicates (first {min(examples, len(dropped))} of {len(dropped)})",
            "",
            markdown_table(dropped.head(examples)),
        ]
    return "\n".join(lines) + "\n"
