"""The HTML toolkit (``html``): every page the project writes is built with it, so the pages look
alike and each is one self-contained file. The pages themselves live with their data: the study
page in ``oncosynth.study.page``, the evaluation page in ``oncosynth.metrics.page``."""

from oncosynth.report.html import figure, image_grid, page, table

__all__ = ["figure", "image_grid", "page", "table"]
