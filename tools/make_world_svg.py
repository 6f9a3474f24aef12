#!/usr/bin/env python3
"""Converts world-atlas's land-110m.json (TopoJSON, ISC licence, derived from Natural Earth's
public-domain 1:110m land polygons) into the SVG path that the status page draws
(src/status_page/world.svg). Run once; the output is committed, so neither the build nor the
server needs Node, the npm package or the network.

    npm pack world-atlas@2 && tar xzf world-atlas-2.*.tgz
    python3 tools/make_world_svg.py package/land-110m.json > src/status_page/world.svg

Projection: equirectangular, x = (lon + 180) * 2, y = (90 - lat) * 2, in a 720 x 360 view box,
so the page places a region at the same formula from its lat/lon. Coordinates are rounded to
0.5 units (about 0.25 degree) and points closer than that to the previous one are dropped:
the map is 20-odd KiB and still reads as the world at any width a browser shows it.
"""

import json
import sys


def decode_arcs(topo):
    """TopoJSON arcs are delta-encoded integers under a transform; make them absolute lon/lat."""
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)
    return arcs


def ring_points(ring, arcs):
    """A ring is a list of arc indices; a negative index ~i means arc i reversed."""
    pts = []
    for i in ring:
        a = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        # Consecutive arcs share their joining point.
        pts.extend(a if not pts else a[1:])
    return pts


def split_at_antimeridian(pts):
    """A ring that crosses 180 degrees would be drawn as a band across the whole map (its
    segment from 180 to -180 runs the width of it). Cut it there instead: rotate the ring to
    start at a crossing, then every piece runs from the edge to the edge on one side and is
    closed along the edge itself, where the seam cannot be seen."""
    crossings = [i for i in range(len(pts) - 1) if abs(pts[i + 1][0] - pts[i][0]) > 180]
    if not crossings:
        return [pts]
    ring = pts[:-1] if pts[0] == pts[-1] else pts
    start = (crossings[0] + 1) % len(ring)
    ring = ring[start:] + ring[:start]
    ring.append(ring[0])
    pieces, cur = [], []
    for a, b in zip(ring, ring[1:]):
        cur.append(a)
        if abs(b[0] - a[0]) > 180:
            # Where the segment meets the edge: a on one side at lon ~ +-180, b on the other.
            edge = 180 if a[0] > 0 else -180
            span = (180 - abs(a[0])) + (180 - abs(b[0]))
            t = (180 - abs(a[0])) / span if span else 0
            lat = a[1] + (b[1] - a[1]) * t
            cur.append((edge, lat))
            pieces.append(cur)
            cur = [(-edge, lat)]
    cur.append(ring[-1])
    if len(cur) > 1:
        pieces.append(cur)
    return pieces


def project(lon, lat):
    return (round((lon + 180) * 4) / 2, round((90 - lat) * 4) / 2)


def fmt(v):
    return ("%.1f" % v).rstrip("0").rstrip(".")


def main():
    topo = json.load(open(sys.argv[1]))
    arcs = decode_arcs(topo)
    polygons = []
    for geom in topo["objects"]["land"]["geometries"]:
        if geom["type"] == "Polygon":
            polygons.append(geom["arcs"])
        elif geom["type"] == "MultiPolygon":
            polygons.extend(geom["arcs"])
    d = []
    for poly in polygons:
        for ring in poly:
            for piece in split_at_antimeridian(ring_points(ring, arcs)):
                pts = []
                for lon, lat in piece:
                    p = project(lon, lat)
                    if not pts or p != pts[-1]:
                        pts.append(p)
                if len(pts) < 4:
                    continue  # an islet smaller than the rounding
                d.append(
                    "M" + "L".join(fmt(x) + " " + fmt(y) for x, y in pts) + "Z"
                )
    sys.stdout.write(
        "<!-- Land outlines: Natural Earth 1:110m (public domain) via world-atlas 2.0.2 "
        "(ISC, (c) 2013-2019 Michael Bostock); made by tools/make_world_svg.py -->\n"
        '<path class="land" d="' + "".join(d) + '"/>\n'
    )


if __name__ == "__main__":
    main()
