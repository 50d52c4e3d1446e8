"""Worker processes: load the data set and compute statistics."""
