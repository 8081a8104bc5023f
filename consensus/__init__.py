"""The DistributeAI protocol as pure code: messages, canonical encoding, signatures, the k-of-n
tally, the submitter's and the executor's state machines, the gossip check and certificate checks.
No I/O, no clock reads."""
