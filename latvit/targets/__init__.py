"""Targets: *where* an artifact runs and is timed, behind one seam, with the measurement protocol."""
