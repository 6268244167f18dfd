"""Analysis of committed outputs: streamed statistics, the HTML report, agreement with expert annotations, and the
terminal summaries."""
