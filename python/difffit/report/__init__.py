"""Self-contained HTML reports: the building blocks (:mod:`.blocks`) and the report of
each workflow (:func:`fit_report`, :func:`composite_report`, :func:`identify_report`)."""
from .blocks import bar_chart, histogram, line_plot, page, table, write_report
from .composite import composite_report
from .fit import fit_meta, fit_report, fit_sections
from .identify import identify_report

__all__ = ["table", "histogram", "line_plot", "bar_chart", "page", "write_report",
           "fit_report", "fit_sections", "fit_meta", "composite_report", "identify_report"]
