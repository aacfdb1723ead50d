"""Triangle-mesh topology operations of the build: triangles from edges, mirror-symmetric topology, boundary loops,
hole filling, orientation and the edge-length graph."""

import numpy as np
from scipy import sparse


def unique_edges(triangles: np.ndarray) -> np.ndarray:
    """(E, 2) sorted vertex pairs of the triangles' edges, in lexicographic order."""
    pairs = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(pairs, axis=0)


def triangles_from_edges(edges: np.ndarray, num_vertices: int) -> np.ndarray:
    """Triangles of a manifold mesh given only its edges (unoriented, (ntri, 3), sorted rows).

    Every 3-cycle of the edge graph is a candidate; one whose three edges each bound two other candidates is a
    cycle round other triangles (e.g. round a vertex of degree 3), not a face, and is dropped.

    Raises:
        ValueError: an edge would bound more than two triangles.
    """
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices,) * 2)
    neighbours = [set(row) for row in sparse.csr_matrix(graph + graph.T).tolil().rows]
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]})
    cliques = np.array(cliques, dtype=np.int64)
    edge_ids = {tuple(e): k for k, e in enumerate(unique_edges(cliques))}
    clique_edges = np.array([[edge_ids[(t[0], t[1])], edge_ids[(t[1], t[2])], edge_ids[(t[0], t[2])]] for t in cliques])
    uses = np.bincount(clique_edges.ravel(), minlength=len(edge_ids))
    spurious = (uses[clique_edges] > 2).all(axis=1)
    triangles = cliques[~spurious]
    edge_uses = np.unique(np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1), axis=0, return_counts=True)[1]
    if (edge_uses > 2).any():
        raise ValueError("the edges do not describe a manifold triangle mesh")
    return triangles


def edge_key(a: np.ndarray, b: np.ndarray, num_vertices: int) -> np.ndarray:
    """Integer key ``min * num_vertices + max`` of each undirected edge (a, b); a, b: vertex index arrays."""
    return np.minimum(a, b) * num_vertices + np.maximum(a, b)


def symmetrise_topology(triangles: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Flip quad diagonals so that the mirror map sends every edge to an edge.

    Args:
        triangles: (ntri, 3) unoriented triangles. mirror: (n,) mirror vertex of each vertex (an involution).
    Returns:
        (ntri, 3) triangles whose edge set is closed under ``mirror``.
    """
    triangles = triangles.copy()
    n = len(mirror)
    for _ in range(len(triangles) + 1):
        edges = unique_edges(triangles)
        keys = set(edge_key(edges[:, 0], edges[:, 1], n).tolist())
        broken = [e for e in edges.tolist() if int(edge_key(mirror[e[0]], mirror[e[1]], n)) not in keys]
        if not broken:
            return triangles
        if not _flip_one(triangles, broken, keys, mirror):
            raise ValueError("the mesh's topology cannot be made mirror-symmetric by flipping edges")
    raise ValueError("edge flipping did not converge")


def _flip_one(triangles: np.ndarray, broken: list[list[int]], keys: set[int], mirror: np.ndarray) -> bool:
    """Flip (in place) the first broken edge whose flipped diagonal has a mirror edge; False if none has."""
    n = len(mirror)
    for a, b in broken:
        pair = np.flatnonzero(np.isin(triangles, (a, b)).sum(1) == 2)
        if len(pair) != 2:
            continue
        p, q = (int(np.setdiff1d(triangles[t], (a, b))[0]) for t in pair)
        mirrored = int(edge_key(mirror[p], mirror[q], n))
        if mirrored in keys and mirrored != int(edge_key(a, b, n)):
            triangles[pair[0]] = sorted((p, q, a))
            triangles[pair[1]] = sorted((p, q, b))
            return True
    return False


def boundary_loops(triangles: np.ndarray, num_vertices: int) -> list[np.ndarray]:
    """Closed boundary loops (vertex index arrays), each starting at its smallest vertex, sorted by it."""
    pairs = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys, counts = np.unique(pairs @ [num_vertices, 1], return_counts=True)
    boundary = np.stack([keys[counts == 1] // num_vertices, keys[counts == 1] % num_vertices], 1)
    neighbours: dict[int, list[int]] = {}
    for a, b in boundary.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    if any(len(v) != 2 for v in neighbours.values()):
        raise ValueError("a boundary vertex has more than two boundary edges")
    loops, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, previous, current = [start], start, min(neighbours[start])
        seen.add(start)
        while current != start:
            loop.append(current)
            seen.add(current)
            previous, current = current, next(v for v in neighbours[current] if v != previous)
        loops.append(np.array(loop, dtype=np.int64))
    return loops


def zipper_fill(loop: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Close a hole by zipping its two chains between the loop's leftmost and rightmost (x) vertices together.

    Each step adds the triangle with the shorter new diagonal; the first and last steps, which would repeat the
    chains' shared end, are dropped.

    Args:
        loop: (k,) boundary loop. vertices: (n, 3).
    Returns:
        (k - 2, 3) unoriented triangles.
    """
    start = int(np.argmin(vertices[loop, 0]))
    loop = np.roll(loop, -start)
    end = int(np.argmax(vertices[loop, 0]))
    upper, lower = loop[: end + 1], np.concatenate([loop[:1], loop[end:][::-1]])
    triangles, i, j = [], 0, 0
    while i < len(upper) - 1 or j < len(lower) - 1:
        advance_upper = j == len(lower) - 1 or (
            i < len(upper) - 1
            and np.linalg.norm(vertices[upper[i + 1]] - vertices[lower[j]])
            <= np.linalg.norm(vertices[lower[j + 1]] - vertices[upper[i]])
        )
        if advance_upper:
            triangles.append((upper[i], upper[i + 1], lower[j]))
            i += 1
        else:
            triangles.append((upper[i], lower[j + 1], lower[j]))
            j += 1
    return np.array([t for t in triangles if len(set(t)) == 3], dtype=np.int64)


def orient_triangles(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Orient a connected mesh consistently, clockwise seen from +z (normals ``cross(p0-p1, p0-p2)`` point -z).

    Args:
        triangles: (ntri, 3) unoriented. vertices: (n, 3) in model axes (face towards +z).
    Returns:
        (ntri, 3) oriented triangles, same order.
    """
    triangles = triangles.copy()
    edge_triangles: dict[tuple[int, int], list[int]] = {}
    for t, tri in enumerate(triangles.tolist()):
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            edge_triangles.setdefault((min(a, b), max(a, b)), []).append(t)
    done = np.zeros(len(triangles), dtype=bool)
    done[0] = True
    queue = [0]
    while queue:
        t = queue.pop()
        tri = triangles[t].tolist()
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            for u in edge_triangles[(min(a, b), max(a, b))]:
                if done[u]:
                    continue
                other = triangles[u].tolist()
                same_direction = any((other[k], other[(k + 1) % 3]) == (a, b) for k in range(3))
                if same_direction:
                    triangles[u] = triangles[u][::-1]
                done[u] = True
                queue.append(u)
    if not done.all():
        raise ValueError("the mesh is not connected")
    p0, p1, p2 = (vertices[triangles[:, k]] for k in range(3))
    if np.cross(p0 - p1, p0 - p2)[:, 2].sum() > 0:
        triangles = triangles[:, ::-1]
    return np.ascontiguousarray(triangles)


def edge_graph(vertices: np.ndarray, triangles: np.ndarray) -> sparse.csr_matrix:
    """(n, n) symmetric sparse matrix of edge lengths."""
    edges = unique_edges(triangles)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    graph = sparse.coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return sparse.csr_matrix(graph + graph.T)
