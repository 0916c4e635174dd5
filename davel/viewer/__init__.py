"""See the events: a timeline figure (`davel plot`) and a self-contained HTML page (`davel view`).

Library entry points (each takes result dicts, objects with ``to_dict()`` or a
result file path):

* :func:`save_timeline` - one result -> PNG/SVG/PDF (what ``detect --plot`` calls);
* :func:`plot_results` - every result in a file -> one figure each;
* :func:`write_page` - results + videos -> one HTML page.
"""
from __future__ import annotations

from davel.viewer.page import build_page, write_page
from davel.viewer.results import filter_events, load_results
from davel.viewer.timeline import plot_results, save_timeline, timeline_figure

__all__ = ["build_page", "filter_events", "load_results", "plot_results", "save_timeline",
           "timeline_figure", "write_page"]
