"""One router per resource: health, stats, races, frames, sample, metrics, viewer."""
