# A request to a real node or the local load balancer is lost when it is refused, reset or
# unanswered for this long: a slow answer is not a lost one (one of 524 took over 2 s with the
# whole suite on two cores), and a cut connection still fails long before a run ends.
LOST_AFTER_SECONDS = 10
