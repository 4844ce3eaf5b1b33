"""Self-contained HTML reports (one file, inline CSS and images)."""

from oncosynth.report.html import figure, image_grid, page, table

__all__ = ["figure", "image_grid", "page", "table"]
