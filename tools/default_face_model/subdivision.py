"""Loop subdivision as a linear operator on vertex attributes, keeping the mirror map."""

from typing import NamedTuple

import numpy as np
from scipy import sparse

from tools.default_face_model.mesh_ops import edge_key, unique_edges


class Subdivision(NamedTuple):
    """One level of Loop subdivision.

    operator: (n_fine, n_coarse) sparse matrix; fine attributes = operator @ coarse attributes.
    triangles: (4 ntri, 3) fine triangles, same orientation. mirror: (n_fine,) fine mirror map, or None.
    """

    operator: sparse.csr_matrix
    triangles: np.ndarray
    mirror: np.ndarray | None


def loop_subdivision(triangles: np.ndarray, num_vertices: int, mirror: np.ndarray | None = None) -> Subdivision:
    """Loop's subdivision (1987) with boundary rules, as a linear operator on vertex attributes.

    New vertices n, n+1, ... are the edge midpoints, in :func:`unique_edges` order.

    Args:
        triangles: (ntri, 3) oriented triangles. num_vertices: n.
        mirror: (n,) mirror map whose edges are edges (see :func:`symmetrise_topology`), or None.
    """
    n = num_vertices
    edges = unique_edges(triangles)
    edge_index = {k: i for i, k in enumerate(edge_key(edges[:, 0], edges[:, 1], n).tolist())}
    corner_edges = np.array(
        [[edge_index[int(edge_key(t[a], t[b], n))] for a, b in ((0, 1), (1, 2), (2, 0))] for t in triangles]
    )
    # Opposite vertex of each (triangle, edge) corner.
    opposite = triangles[:, [2, 0, 1]]
    edge_of_corner, opposite_of_corner = corner_edges.ravel(), opposite.ravel()
    counts = np.bincount(edge_of_corner, minlength=len(edges))
    interior = counts == 2

    rows, cols, values = [], [], []
    # Edge points: 3/8 (a + b) + 1/8 (c + d) inside, (a + b) / 2 on the boundary.
    edge_ids = np.arange(len(edges))
    weight = np.where(interior, 3 / 8, 1 / 2)
    for k in (0, 1):
        rows.append(n + edge_ids)
        cols.append(edges[:, k])
        values.append(weight)
    inner_corner = interior[edge_of_corner]
    rows.append(n + edge_of_corner[inner_corner])
    cols.append(opposite_of_corner[inner_corner])
    values.append(np.full(inner_corner.sum(), 1 / 8))

    # Vertex points: Loop's beta inside, 3/4 self + 1/8 per boundary neighbour on the boundary.
    on_boundary = np.zeros(n, dtype=bool)
    on_boundary[edges[~interior].ravel()] = True
    valence = np.bincount(edges.ravel(), minlength=n)
    beta = (5 / 8 - (3 / 8 + np.cos(2 * np.pi / np.maximum(valence, 1)) / 4) ** 2) / np.maximum(valence, 1)
    for a, b in ((0, 1), (1, 0)):
        inner = ~on_boundary[edges[:, a]]
        rows.append(edges[inner, a])
        cols.append(edges[inner, b])
        values.append(beta[edges[inner, a]])
        outer = on_boundary[edges[:, a]] & ~interior
        rows.append(edges[outer, a])
        cols.append(edges[outer, b])
        values.append(np.full(outer.sum(), 1 / 8))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    values.append(np.where(on_boundary, 3 / 4, 1 - valence * beta))

    operator = sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n + len(edges), n)
    )
    e01, e12, e20 = (n + corner_edges[:, k] for k in range(3))
    a, b, c = triangles.T
    fine = np.stack(
        [
            np.stack([a, e01, e20], 1),
            np.stack([e01, b, e12], 1),
            np.stack([e20, e12, c], 1),
            np.stack([e01, e12, e20], 1),
        ],
        axis=1,
    ).reshape(-1, 3)
    fine_mirror = None
    if mirror is not None:
        mirrored_keys = edge_key(mirror[edges[:, 0]], mirror[edges[:, 1]], n).tolist()
        try:
            edge_mirror = np.array([edge_index[k] for k in mirrored_keys], dtype=np.int64)
        except KeyError as error:
            raise ValueError("the mirror map does not send every edge to an edge") from error
        fine_mirror = np.concatenate([mirror, n + edge_mirror])
    return Subdivision(operator, fine, fine_mirror)
