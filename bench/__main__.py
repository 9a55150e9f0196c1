"""Run the benchmarks: `python -m bench [--quick] [--only search,forget,...]`.

Results land in bench/results/<run>/ as results.json, results.md and PNG plots.
--quick finishes in a few minutes on 2 cores; the full run measures 1M vectors.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import accuracy, breakdown, cluster, embedding, enroll, forget, gpu, http, index_kinds, migrate, milvus, report, scale, search, store
from bench.machine import describe

SECTIONS = {"embedding": embedding, "search": search, "breakdown": breakdown, "enrollment": enroll, "forget": forget, "clustering": cluster,
            "store": store, "accuracy": accuracy, "http": http, "migration": migrate, "milvus": milvus, "gpu": gpu,
            "kinds": index_kinds, "scale": scale}
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes on 2 cores")
    parser.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    parser.add_argument("--name", default="", help="run folder name (default: a timestamp)")
    parser.add_argument("--search-sizes", default="", help="comma-separated gallery sizes for search (default: 100000,1000000; 20000 with --quick)")
    parser.add_argument("--cluster-sizes", default="", help="comma-separated synthetic collection sizes for clustering (default: 100000; 10000 with --quick)")
    parser.add_argument("--migrate-sizes", default="", help="comma-separated collection sizes for migration (default: 100000; 2000 with --quick)")
    parser.add_argument("--kinds-sizes", default="", help="comma-separated gallery sizes for the index kinds (default: 1000000; 20000 with --quick)")
    parser.add_argument("--scale-sizes", default="", help="comma-separated collection sizes for the scale section (default: 1000000; 20000 with --quick)")
    parser.add_argument("--milvus-sizes", default="", help="comma-separated collection sizes for the Milvus section (default: 100000; 20000 with --quick)")
    args = parser.parse_args()
    from facebank.server.runtime import configure_process

    configure_process()  # as a server starts: before FAISS loads
    if args.search_sizes:
        search.SIZES = store.SIZES = [int(n) for n in args.search_sizes.split(",")]
    if args.milvus_sizes:
        milvus.SIZES = [int(n) for n in args.milvus_sizes.split(",")]
    if args.scale_sizes:
        scale.SIZES = [int(n) for n in args.scale_sizes.split(",")]
    if args.kinds_sizes:
        index_kinds.SIZES = [int(n) for n in args.kinds_sizes.split(",")]
    if args.migrate_sizes:
        migrate.SIZES = [int(n) for n in args.migrate_sizes.split(",")]
    if args.cluster_sizes:
        cluster.SIZES = [int(n) for n in args.cluster_sizes.split(",")]
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    run = args.name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    results = {"run": run, "quick": args.quick, "machine": describe(), "command": "python -m bench " + " ".join(sys.argv[1:]), "seconds": {}}
    for name in chosen:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        results.update(SECTIONS[name].run(args.quick, log=lambda *a: print(*a, flush=True)))
        results["seconds"][name] = round(time.perf_counter() - started, 1)
    report.write(RESULTS / run, results)
    print(f"results in {RESULTS / run}")
    for t in results["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']} (goal {t['goal']})")


if __name__ == "__main__":
    main()
