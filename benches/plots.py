"""The plots of one run (matplotlib): throughput per workload, codec size against speed,
and the scaling sweeps, written as PNG files beside the report."""

from __future__ import annotations

import os

from record import Results

__all__ = ["write_plots"]


def write_plots(res: Results, out_dir: str) -> list[str]:
    """Throughput bars per workload, size-vs-speed scatter for codecs, scaling plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []
    blake_mt = res.refs.get("blake3 multi-threaded (AUTO)")
    memcpy = max((v for k, v in res.refs.items() if k.startswith("memcpy")), default=None)

    for wl in res.workloads:
        rows = [r for r in res.rows if r.workload == wl and r.status == "ok"]
        if not rows:
            continue
        names = [r.method for r in rows]
        enc = [r.gbps("encode") or 0 for r in rows]
        dec = [r.gbps(r.primary_decode() or "decode") or 0 for r in rows]
        height = 0.32 * len(rows) + 1.6
        fig, ax = plt.subplots(figsize=(9, height))
        fig.subplots_adjust(left=0.24, right=0.97, top=1 - 0.45 / height, bottom=0.7 / height)
        y = list(range(len(rows)))
        ax.barh([i - 0.2 for i in y], enc, height=0.4, label="encode", color="#3b7dd8")
        ax.barh(
            [i + 0.2 for i in y],
            dec,
            height=0.4,
            label="decode (verified where offered)",
            color="#e8833a",
        )
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("GB/s of raw tensor data (log scale)")
        if memcpy:
            ax.axvline(memcpy, color="k", ls="--", lw=1, label=f"memcpy {memcpy:.1f} GB/s")
        if blake_mt:
            ax.axvline(blake_mt, color="g", ls=":", lw=1, label=f"blake3 MT {blake_mt:.1f} GB/s")
        ax.set_title(f"Throughput, {wl}")
        ax.legend(fontsize=7, loc="lower right")
        name = f"throughput_{wl}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)

    codec_wls = [w for w in ("real-minilm", "bert-base") if w in res.workloads]
    if codec_wls:
        fig, axes = plt.subplots(
            1, len(codec_wls), figsize=(6.5 * len(codec_wls), 5), squeeze=False
        )
        for ax, wl in zip(axes[0], codec_wls):
            pts = [
                r
                for r in res.rows
                if r.workload == wl
                and r.status == "ok"
                and (r.group in ("lossless", "lossy") or r.method.startswith(("py-", "np.savez_c")))
            ]
            for r in pts:
                color = {"lossless": "#3b7dd8", "lossy": "#d83b3b"}.get(r.group, "#777777")
                ax.scatter(r.gbps("encode") or 0, r.size_ratio or 0, color=color)
                ax.annotate(r.method, (r.gbps("encode") or 0, r.size_ratio or 0), fontsize=6)
            ax.set_xscale("log")
            ax.set_xlabel("encode GB/s (log)")
            ax.set_ylabel("size / raw")
            ax.axhline(0.8, color="k", ls=":", lw=0.8)
            ax.set_title(f"{wl}: blue lossless tw, red lossy tw, grey peers")
        fig.subplots_adjust(left=0.06, right=0.98, top=0.92, bottom=0.1, wspace=0.15)
        fig.savefig(os.path.join(out_dir, "codecs_size_vs_speed.png"), dpi=110)
        plt.close(fig)
        files.append("codecs_size_vs_speed.png")

    for series, unit, name in (
        (res.scaling_bytes, "payload MB", "scaling_bytes.png"),
        (res.scaling_count, "tensor count", "scaling_count.png"),
    ):
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 5))
        for s in series:
            ax.plot(s.xs, [t * 1e3 for t in s.seconds], marker="o", label=s.label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{unit} (log)")
        ax.set_ylabel("median ms (log)")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"Cost vs {unit}")
        fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.1)
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)
    return files
