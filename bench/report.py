"""Writing a run: results.json, results.md (tables and target ratios) and plots."""

from __future__ import annotations

import json
from pathlib import Path


def targets(results: dict) -> list[dict]:
    """Each target of the issues, as measured in this run: value, goal, met."""
    out = []

    def add(name, value, goal, met):
        out.append({"target": name, "value": value, "goal": goal, "met": bool(met)})

    search = results.get("search", [])

    def pick(system, n, batch):
        return next((r for r in search if r["system"] == system and r["n"] == n and r["batch"] == batch), None)

    for n in sorted({r["n"] for r in search}):
        grpc64, faiss64 = pick("facebank-grpc", n, 64), pick("faiss", n, 64)
        if grpc64 and faiss64:
            ratio = round(grpc64["qps"] / faiss64["qps"], 3)
            add(f"facebank-grpc batch-64 QPS / faiss at n={n:,}", ratio, ">= 0.8 at equal recall "
                f"({grpc64['recall_at_10']} vs {faiss64['recall_at_10']})", ratio >= 0.8)
        grpc1, inproc1 = pick("facebank-grpc", n, 1), pick("facebank-inproc", n, 1)
        if grpc1 and inproc1:
            gap = round(grpc1["p50_ms"] - inproc1["p50_ms"], 3)
            floor = results.get("search_details", {}).get(str(n), {}).get("grpc_empty_call_p50_ms")
            add(f"single-query p50 over gRPC minus in-process at n={n:,} (ms)", gap,
                "<= 1.0" + (f" (an empty gRPC call takes {floor} ms here)" if floor else ""), gap <= 1.0)
    big = pick("facebank-inproc", 1_000_000, 64)
    if big:
        add("recall@10 at 1M (facebank IVF)", big["recall_at_10"], ">= 0.95", big["recall_at_10"] >= 0.95)
    summary = results.get("embedding_summary", {}).get("speedup_vs_naive", {})
    for name, ratio in summary.items():
        add(f"embedder throughput / naive loop ({name})", ratio, ">= 1.0", ratio >= 1.0)
    for row in results.get("enrollment", []):
        if "vs_plain_loop" in row:
            add(f"`facebank enroll DIR` ({row['workers']} stream(s), crops {'on' if row['crops'] else 'off'}) / plain onnxruntime loop",
                row["vs_plain_loop"], ">= 1.0", row["vs_plain_loop"] >= 1.0)
    forget = results.get("forget")
    if forget:
        add("forget-set rank-1 hit rate", forget["forget_rank1_hit_rate"], "== 0", forget["forget_rank1_hit_rate"] == 0)
        add("retain rank-1 drop (points)", forget["retain_rank1_drop_points"], "<= 0.1", forget["retain_rank1_drop_points"] <= 0.1)
        add("retain recall@10 drop (points)", forget["retain_recall10_drop_points"], "<= 0.1", forget["retain_recall10_drop_points"] <= 0.1)
        if forget["faces"] >= 1_000_000:
            add("forget p99 at 1M faces under batch-64 search load (ms)", forget["forget_p99_ms"], "<= 100", forget["forget_p99_ms"] <= 100)
    for row in results.get("clustering", []):
        if not row["system"].startswith("facebank"):
            continue
        add(f"BCubed F on synthetic {row['faces']:,} faces", row["bcubed_f"], ">= 0.95", row["bcubed_f"] >= 0.95)
        if row["faces"] == 100_000:
            add("100k faces clustered (graph + clustering, s)", row["total_s"], "<= 60 on 2 cores", row["total_s"] <= 60)
        if row["faces"] >= 1_000_000:
            add(f"{row['faces']:,} faces clustered (graph + clustering, s)", row["total_s"], "reported", True)
            add(f"{row['faces']:,} faces clustered, peak RSS (GB)", row["peak_rss_gb"], "reported", True)
    for version in ("after", "before"):
        for row in results.get("store_rows", []):
            if row["version"] == version and row["start"] == "rebuilding from catalog":
                ratio = round(row["filter_10pct_ms"] / row["unfiltered_ms"], 2)
                add(f"filtered search at 10% / unfiltered, p50, {row['faces']:,} faces ({version})", ratio, "<= 1.5", ratio <= 1.5)
    acc = results.get("accuracy", {}).get("rules", {}).get("best-face")
    if acc:
        add("closed-set rank-1 on the shipped photos (best face)", acc["rank1"], "reported", True)
        add("FAR at the default threshold on the shipped photos (top-1 impostors)", acc["default_threshold"]["far"], "reported", True)
    real = results.get("clustering_real")
    if real:
        ok = real["impure_clusters"] == 0 and real["identities_in_exactly_one_cluster"] == real["identities_with_2plus_faces"]
        add("real photos: every identity in one pure cluster", f"{real['identities_in_exactly_one_cluster']}/{real['identities_with_2plus_faces']}, {real['impure_clusters']} impure", "all, 0 impure", ok)
        add("real photos: clusters holding two faces of one photo", real["clusters_holding_two_faces_of_one_photo"], "== 0", real["clusters_holding_two_faces_of_one_photo"] == 0)
    for row in results.get("milvus_overhead", []):
        add(f"facebank-on-Milvus batch-64 time per query / pymilvus direct, minus 1, at n={row['n']:,}", row["overhead"],
            f"<= 0.20 at equal recall ({row['recall_facebank']} vs {row['recall_direct']})", row["overhead"] <= 0.20)
    kinds = results.get("index_kinds", [])
    for n in sorted({r["n"] for r in kinds}):
        row = {r["system"]: r for r in kinds if r["n"] == n and r["batch"] == 64}
        sq8, flat, raw = row.get("facebank-ivf_sq8"), row.get("facebank-ivf"), row.get("faiss-sq8")
        if sq8 and flat:
            ratio = round(sq8["bytes_per_face"] / flat["bytes_per_face"], 3)
            add(f"IVF-SQ8 index bytes per face / IVF-Flat at n={n:,}", ratio, f"reported ({sq8['bytes_per_face']} vs {flat['bytes_per_face']} B)", True)
            add(f"IVF-SQ8 recall@10 at n={n:,}", sq8["recall_at_10"], ">= 0.95", sq8["recall_at_10"] >= 0.95)
        if sq8 and raw:
            ratio = round(sq8["qps"] / raw["qps"], 3)
            add(f"facebank IVF-SQ8 batch-64 QPS / raw FAISS IVF-SQ8 at n={n:,}", ratio,
                f"reported at equal recall ({sq8['recall_at_10']} vs {raw['recall_at_10']})", True)
    from bench.scale import targets as scale_targets

    for name, value, goal, met in scale_targets(results.get("scale", [])):
        add(name, value, goal, met)
    return out


def _table(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write(run_dir: Path, results: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    results["targets"] = targets(results)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    m = results["machine"]
    md = [f"# facebank benchmark: {results['run']}\n", f"Mode: {'quick' if results['quick'] else 'full'}. "
          f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; GPU: {m['gpu'] or 'none'}.\n",
          f"Command: `{results['command']}`\n", "## Targets\n", _table(results["targets"])]
    for key, title in (("search", "Search"), ("embedding", "Embedding"), ("enrollment", "Enrollment"), ("clustering", "Clustering"),
                       ("store_rows", "The store, before and after"), ("http", "HTTP and gRPC, same server and photos"), ("migration", "Moving a collection to another model"), ("store_clustering_rows", "Clustering passes through the store, before and after"),
                       ("milvus", "Vectors in Milvus: facebank vs pymilvus on the same collection, and facebank on FAISS"),
                       ("milvus_load", "Vectors in Milvus: bulk load"), ("index_kinds", "Index kinds: IVF-Flat and IVF-SQ8 beside raw FAISS"),
                       ("milvus_nodes", "Search nodes over one Milvus server"), ("milvus_forget", "Vectors in Milvus: forget latency"),
                       ("scale", "A collection's life at scale: RSS (GB) per phase, starts, bytes on disk")):
        if results.get(key):
            md += [f"## {title}\n", _table(results[key])]
    if results.get("accuracy"):
        shown = {k: v for k, v in results["accuracy"].items() if k != "rules"}
        shown["rules"] = {rule: {k: v for k, v in r.items() if not k.startswith("_")} for rule, r in results["accuracy"]["rules"].items()}
        md += ["## Accuracy on real labelled photos\n", "```json\n" + json.dumps(shown, indent=2) + "\n```\n"]
    for key, title in (("forget", "Forget / retain"), ("clustering_real", "Clustering the real photos"), ("gpu", "GPU"), ("search_details", "Search details"),
                       ("search_breakdown", "Where a batch-64 search spends its time")):
        if results.get(key):
            md += [f"## {title}\n", "```json\n" + json.dumps(results[key], indent=2) + "\n```\n"]
    (run_dir / "results.md").write_text("\n".join(md))
    _plots(run_dir, results)


def _plots(run_dir: Path, results: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if results.get("accuracy"):
        from bench.accuracy import plot

        plot(run_dir, results["accuracy"])
    if results.get("scale_trace"):
        from bench.scale import plot

        plot(run_dir, results["scale_trace"], plt)
    search = results.get("search", [])
    for n in sorted({r["n"] for r in search}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for batch, marker in ((1, "o"), (64, "s")):
            for r in (r for r in search if r["n"] == n and r["batch"] == batch):
                ax.scatter(r["recall_at_10"], r["qps"], marker=marker, s=60)
                ax.annotate(f"{r['system']} b{batch}", (r["recall_at_10"], r["qps"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs exact")
        ax.set_ylabel("queries / s (log)")
        ax.set_title(f"Search, {n:,} vectors x 512")
        fig.tight_layout()
        fig.savefig(run_dir / f"search_{n}.png", dpi=120)
        plt.close(fig)
    if results.get("embedding"):
        rows = results["embedding"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.barh([f"{r['system']} ({r['images_per_call']}/call)" for r in rows], [r["faces_per_s"] for r in rows])
        ax.set_xlabel("faces / s")
        ax.set_title("Embedding throughput (CPU)")
        fig.tight_layout()
        fig.savefig(run_dir / "embedding.png", dpi=120)
        plt.close(fig)
    if results.get("store_rows"):
        rows = [r for r in results["store_rows"] if r["start"] == "rebuilding from catalog"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        labels = [f"{r['faces'] // 1000}k {r['version']}" for r in rows]
        axes[0].barh(labels, [r["start_s"] for r in rows])
        axes[0].set_xlabel("start rebuilding every index from the catalog (s)")
        for i, key in enumerate(("unfiltered_ms", "filter_10pct_ms", "filter_0.1pct_ms")):
            axes[1].barh([j + i * 0.27 for j in range(len(rows))], [r[key] for r in rows], 0.27, label=key.removesuffix("_ms"))
        axes[1].set_yticks([j + 0.27 for j in range(len(rows))], labels)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("single-query search p50 (ms, log)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / "store_before_after.png", dpi=120)
        plt.close(fig)
    if results.get("clustering"):
        rows = [r for r in results["clustering"] if r["faces"] == results["clustering"][0]["faces"]]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.25
        for i, metric in enumerate(("pairwise_f", "bcubed_f", "nmi")):
            ax.bar([j + i * width for j in range(len(rows))], [r[metric] for r in rows], width, label=metric)
        ax.set_xticks([j + width for j in range(len(rows))], [r["system"] for r in rows], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title(f"Clustering {rows[0]['faces']:,} synthetic faces")
        fig.tight_layout()
        fig.savefig(run_dir / "clustering.png", dpi=120)
        plt.close(fig)
