# A request to a real node or the local load balancer is lost when it is refused, reset or
# unanswered for this long: a slow answer is not a lost one (one of 524 took over 2 s with the
# whole suite on two cores), and a cut connection still fails long before a run ends.
LOST_AFTER_SECONDS = 10

# A real run's first bake converges the role on a fresh Debian root (on a cold .cache/, with the rest
# of the suite running beside it, that alone can pass two minutes); the bake's own limit is higher.
REAL_RUN_SECONDS = 900


def through_load_balancer(emu) -> str | None:
    """GET / through the load balancer's port 80 (its local stand-in): the answer, or why none came.
    Refused, reset or unanswered for LOST_AFTER_SECONDS, it is lost."""
    import urllib.request

    host, port = emu.load_balancer.address(80)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=LOST_AFTER_SECONDS) as answer:
            return answer.read(500).decode(errors="replace")
    except OSError as exc:
        return f"failed: {exc}"
