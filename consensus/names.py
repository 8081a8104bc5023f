"""Names on the wire: the gossip topic and the request/response protocol ids."""

JOBS_TOPIC = "distributeai/jobs/1"
BID_PROTOCOL = "/distributeai/bid/1"
DECLINE_PROTOCOL = "/distributeai/decline/1"
AWARD_PROTOCOL = "/distributeai/award/1"
COMMIT_PROTOCOL = "/distributeai/commit/1"
REVEAL_PROTOCOL = "/distributeai/reveal/1"
WITHDRAW_PROTOCOL = "/distributeai/withdraw/1"
