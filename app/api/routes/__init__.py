"""One router per topic: health, styles, stylize, jobs, metrics."""
