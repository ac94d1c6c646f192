"""`make bench`: every benchmark under bench/, printing figures (nothing passes or fails on time)."""

from bench import builds, compose, faults, heal, ingress, pipeline, prune, stack, webhook

if __name__ == "__main__":
    for bench in (webhook, compose, pipeline, stack, builds, prune, faults, heal, ingress):
        bench.report(bench.main())
        print()
