"""Everything at the edge: photos, the authors' crop, landmark detectors, mesh files, the demo's overlay, a
case's output folder and all-or-nothing writers."""
