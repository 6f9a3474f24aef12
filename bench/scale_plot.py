#!/usr/bin/env python3
"""Plots bench/scale.sh's TSV into docs/scale-*.png: QPS per server core and RSS per axis,
and load/reload time against zone size. Usage: scale_plot.py RESULTS.tsv OUTDIR"""

import csv
import os
import sys
from collections import defaultdict
from statistics import median

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def main(path, outdir, before_path=None):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    before = defaultdict(lambda: defaultdict(list))
    if before_path and os.path.exists(before_path):
        for r in csv.DictReader(open(before_path), delimiter="\t"):
            before[(r["axis"], r["series"])][float(r["x"])].append(r)
    # (axis, series) -> x -> [rows]; the geoip axis has several runs (ECS subnets) per point.
    data = defaultdict(lambda: defaultdict(list))
    for r in rows:
        data[(r["axis"], r["series"])][float(r["x"])].append(r)

    def series(axis):
        return sorted(s for (a, s) in data if a == axis)

    def points(axis, s, field, src=None):
        src = data if src is None else src
        xs, ys = [], []
        for x in sorted(src[(axis, s)]):
            vals = [num(r[field]) for r in src[(axis, s)][x]]
            vals = [v for v in vals if v is not None]
            if vals:
                xs.append(x)
                ys.append(median(vals))
        return xs, ys

    titles = {
        "zone": ("records in the zone", "Zone size"),
        "services": ("balanced services", "Number of services (weighted, 2 endpoints each)"),
        "endpoints": ("endpoints per service", "Endpoints per service, by policy"),
    }
    for axis, (xlabel, title) in titles.items():
        if not series(axis):
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for s in series(axis):
            xs, ys = points(axis, s, "qps_per_core")
            (line,) = a1.plot(xs, [y / 1000 for y in ys], marker="o", label=s)
            # One server holds every policy's service on this axis: one RSS curve.
            if axis != "endpoints" or s == series(axis)[0]:
                xs, ys = points(axis, s, "rss_kb")
                a2.plot(xs, [y / 1024 for y in ys], marker="o", label=s)
            if (axis, s) in before:
                xs, ys = points(axis, s, "qps_per_core", before)
                a1.plot(xs, [y / 1000 for y in ys], linestyle="--", marker="x",
                        color=line.get_color(), alpha=0.6, label=f"{s} (before)")
        for a in (a1, a2):
            a.set_xscale("log")
            a.set_xlabel(xlabel)
            a.grid(True, which="both", alpha=0.3)
        a1.set_ylabel("k QPS per server core")
        a1.set_ylim(bottom=0)
        a2.set_ylabel("RSS (MiB)" + (", all 7 services in one server" if axis == "endpoints" else ""))
        if axis != "endpoints":
            a2.set_yscale("log")
        if len(series(axis)) > 1:
            a1.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, f"scale-{axis}.png"), dpi=90)
        plt.close(fig)

    if series("zone"):
        fig, a = plt.subplots(figsize=(6, 4.2))
        for field, label in (("load_ms", "start until first answer"), ("reload_ms", "reload (SIGHUP)")):
            xs, ys = points("zone", "records", field)
            a.plot(xs, [y / 1000 for y in ys], marker="o", label=label)
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("records in the zone")
        a.set_ylabel("seconds")
        a.grid(True, which="both", alpha=0.3)
        a.legend()
        a.set_title("Load and reload time against zone size")
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "scale-reload.png"), dpi=90)
        plt.close(fig)

    if series("geoip"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        names = sorted(series("geoip"), key=lambda s: min(data[("geoip", s)]))
        q = [points("geoip", s, "qps_per_core")[1][0] / 1000 for s in names]
        m = [points("geoip", s, "rss_kb")[1][0] / 1024 for s in names]
        sizes = [min(data[("geoip", s)]) for s in names]
        labels = [f"{s}\n{sz / 1e6:.2f} MB" if sz else s for s, sz in zip(names, sizes)]
        a1.bar(labels, q)
        a1.set_ylabel("k QPS per server core (median of 4 ECS subnets)")
        a2.bar(labels, m)
        a2.set_ylabel("RSS (MiB)")
        for a in (a1, a2):
            a.tick_params(axis="x", labelsize=7)
            a.grid(True, axis="y", alpha=0.3)
        fig.suptitle("geo policy by GeoIP database (ordered by file size)")
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "scale-geoip.png"), dpi=90)
        plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
