"""Package data: one ``<paper>.yaml`` of reported figures per paper (see ``bench.report.paper_figures``)."""
