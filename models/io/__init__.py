"""Everything at the edge: photos, the authors' crop, landmark detectors, mesh files, the demo's overlay, a
case's output folder with its textured, millimetre and neutral meshes and all-or-nothing writers."""
